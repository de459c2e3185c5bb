"""trajmoe.train.fit."""
