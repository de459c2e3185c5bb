"""trajmoe.trajectories.reader."""
