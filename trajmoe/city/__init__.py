"""trajmoe.city."""
