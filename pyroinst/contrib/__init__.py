"""Integrations with other lab frameworks, each behind an extra and imported only when used:
``pyroinst.contrib.qcodes`` (``pyroinst[qcodes]``)."""
