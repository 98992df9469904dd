"""pyvisa-sim descriptions of the instruments the tests simulate."""
