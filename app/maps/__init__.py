"""The app's maps (pydeck), drawn only: the numbers come from ``state/`` and ``trajmoe/``.

* :mod:`maps.deck`: the camera, the deck over the base map, its hover box, drawing a map on the page;
* :mod:`maps.basemap`: streets, water, parks and place names from local OSM data (offline);
* :mod:`maps.layers`: the filled-polygon layer every offline map is made of (cells, rims, outlines);
* :mod:`maps.colours`: colours, colour scales and the legend row;
* one map builder per page that draws one: :mod:`maps.pois` (City & POIs), :mod:`maps.visits`
  (Trajectories, and the Flows page's arrivals), :mod:`maps.flows`, :mod:`maps.experts`,
  :mod:`maps.scenario` (with their own legends).

Which map the browser keeps across the analysis pages is :mod:`kept_map`'s business; charts are
in :mod:`charts`; a map as PNG in :mod:`map_png`.
"""
