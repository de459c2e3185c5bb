"""trajmoe.model.trajmoe."""
