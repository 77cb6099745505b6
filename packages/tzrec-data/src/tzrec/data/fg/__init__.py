"""Feature generation (FG) from raw input columns, without pyfg."""
