"""trajmoe.analysis."""
