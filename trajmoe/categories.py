"""The functional POI category taxonomy: one table that OSM tags, Geofabrik ``fclass`` values and
Foursquare venue category names all map onto.

The ORDER of :data:`CATEGORIES` is part of the feature schema (features.py): changing it changes
``features.SCHEMA_ID`` and invalidates checkpoints.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "food_drink",  # restaurants, cafes, fast food, bakeries
    "nightlife",  # bars, pubs, nightclubs
    "retail",  # shops, malls, department stores
    "grocery",  # supermarkets, convenience stores, markets
    "education",  # schools, universities, kindergartens, libraries
    "health",  # hospitals, clinics, doctors, pharmacies
    "transport",  # stations, stops, parking, airports, ferry terminals
    "parks_leisure",  # parks, playgrounds, gardens, beaches
    "sport",  # sports centres, stadiums, pitches, gyms
    "culture_tourism",  # museums, galleries, attractions, monuments, viewpoints
    "entertainment",  # cinemas, theatres, arts venues, amusement
    "accommodation",  # hotels, hostels, guest houses
    "office_work",  # offices, coworking, companies, banks
    "personal_services",  # hairdressers, laundries, repair, beauty
    "public_service",  # town halls, police, post offices, courts, fire stations
    "religion",  # places of worship
    "residential",  # homes, apartment buildings, residential areas
    "industrial",  # factories, warehouses, works
    "automotive",  # fuel, car repair, car dealers, car wash
    "other",  # a POI we know exists but whose function is unclear
)
