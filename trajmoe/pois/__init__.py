"""In: a place name, polygon or bbox (online, OSMnx) or an offline .osm/.osm.bz2/.osm.pbf file or POI table.
Out: a POI frame lat, lon, category (20 functional classes), name, source, with a report of what was skipped."""
