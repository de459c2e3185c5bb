"""trajmoe.pois.osm."""
