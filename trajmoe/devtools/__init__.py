"""trajmoe.devtools."""
