"""`meter-edge setup`: the installer's page, served by the device while setup runs."""
