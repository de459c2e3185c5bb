"""The functional POI category taxonomy: one table that OSM tags, Geofabrik ``fclass`` values and
Foursquare venue category names all map onto.

The ORDER of :data:`CATEGORIES` is part of the feature schema (:mod:`trajmoe.city.features`):
changing it changes ``features.SCHEMA_ID`` and invalidates checkpoints.

How a label becomes a category
------------------------------
* OSM tags (:func:`match_osm_tags`): the keys are tried in the order of :data:`OSM_KEYS`
  and the first ``key=value`` that :data:`TAXONOMY` maps decides. Function keys come first,
  structure keys last: ``amenity=restaurant`` on a ``building=retail`` is a restaurant, and a
  ``building=church`` without ``amenity`` still counts as religion. ``key=*`` rows give a default
  for every other value of a key (any ``shop`` is retail unless listed elsewhere). Tags listed in
  :data:`NOT_DESTINATIONS` (benches, post boxes, ...) never decide, so ``amenity=shelter`` plus
  ``highway=bus_stop`` is a bus stop.
* Geofabrik ``fclass`` (:func:`category_from_fclass`): Geofabrik's class names (``railway_station``,
  ``pofw`` religions such as ``christian_catholic``) plus every explicit OSM value of the table,
  looked up in key order. Shapefile exports truncate long values (``restaura``): a value of three
  or more letters that starts only values of ONE category takes that category.
* Foursquare venue categories (:func:`category_from_foursquare`): the exact names of the table
  (case and accents ignored), then :data:`FOURSQUARE_WORDS` for the long tail: the words of the
  name are read from the last to the first, because the last word of a category name is its head
  noun ("Sports Bar" is a bar, "College Stadium" a stadium), and the first known word decides.

Street furniture and infrastructure (benches, waste baskets, rail tracks, neighbourhood names) are
not destinations: they map to None and the POI readers count them as skipped.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass

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

# OSM keys in decision order (see the module docstring): function before structure.
OSM_KEYS: tuple[str, ...] = (
    "amenity", "shop", "healthcare", "office", "craft", "leisure", "tourism", "sport", "historic",
    "public_transport", "railway", "highway", "aeroway", "emergency", "man_made", "natural",
    "religion", "building", "landuse",
)  # fmt: skip


@dataclass(frozen=True)
class CategoryRow:
    """What maps to one category. Space-separated values keep the table readable."""

    osm: Mapping[str, str]  # OSM key -> space-separated values; "*" = any other value of the key
    fclass: str = ""  # Geofabrik class names that are not plain OSM values
    foursquare: tuple[str, ...] = ()  # exact Foursquare venue category names


# fmt: off
TAXONOMY: dict[str, CategoryRow] = {
    "food_drink": CategoryRow(
        osm={"amenity": "restaurant cafe fast_food food_court ice_cream",
             "shop": "bakery pastry confectionery chocolate"},
        fclass="caterer shabu",
        foursquare=("Restaurant", "Food", "Coffee Shop", "Café", "Bakery", "Burger Joint", "Diner",
                    "Sandwich Place", "Pizza Place", "BBQ Joint", "Bagel Shop", "Donut Shop",
                    "Burrito Place", "Dessert Shop", "Ice Cream Shop", "Food Truck",
                    "Ramen / Noodle House", "Breakfast Spot", "Steakhouse", "Hot Dog Joint",
                    "Salad Place", "Wings Joint", "Cupcake Shop", "Tea Room", "Soup Place",
                    "Fried Chicken Joint", "Taco Place", "Mac & Cheese Joint", "Snack Place",
                    "Gastropub", "Candy Store", "Food Court", "Juice Bar", "Frozen Yogurt",
                    "Creperie", "Bistro", "Buffet", "Cafeteria", "Fish & Chips Shop", "Pie Shop",
                    "Chocolate Shop", "Bubble Tea Shop", "Smoothie Shop", "College Cafeteria",
                    "Noodle House", "Dumpling Restaurant", "Food Stand")),
    "nightlife": CategoryRow(
        osm={"amenity": "bar pub biergarten nightclub stripclub swingerclub hookah_lounge karaoke_box"},
        fclass="wine_bar",
        foursquare=("Bar", "Pub", "Beer Garden", "Other Nightlife", "Nightclub", "Nightlife Spot",
                    "Lounge", "Cocktail Bar", "Wine Bar", "Sports Bar", "Dive Bar", "Gay Bar",
                    "Karaoke Bar", "Hookah Bar", "Brewery", "Speakeasy", "Hotel Bar", "Beer Bar",
                    "Whisky Bar", "Sake Bar", "Piano Bar", "Strip Club", "Irish Pub")),
    "retail": CategoryRow(
        osm={"shop": "* clothes shoes department_store mall general variety_store gift books "
                     "jewelry electronics furniture hardware doityourself sports toys mobile_phone "
                     "optician kiosk florist stationery newsagent cosmetics second_hand pet "
                     "houseware interior_decoration bag art computer garden_centre bicycle yes",
             "landuse": "retail",
             "building": "retail kiosk"},
        fclass="gift_shop shoe_shop sports_shop outdoor_shop mobile_phone_shop toy_shop beauty_shop "
               "video_shop bicycle_shop furniture_shop computer_shop bookshop jeweller chemist "
               "clothing_store pets shop",
        foursquare=("Shop & Service", "Department Store", "Mall", "Shopping Mall", "Clothing Store",
                    "Electronics Store", "Furniture / Home Store", "Bookstore", "College Bookstore",
                    "Miscellaneous Shop", "Smoke Shop", "Hardware Store", "Arts & Crafts Store",
                    "Sporting Goods Shop", "Pet Store", "Toy / Game Store", "Thrift / Vintage Store",
                    "Flea Market", "Paper / Office Supplies Store", "Hobby Shop", "Cosmetics Shop",
                    "Garden Center", "Music Store", "Jewelry Store", "Shoe Store", "Boutique",
                    "Women's Store", "Men's Store", "Accessories Store", "Gift Shop",
                    "Video Game Store", "Mobile Phone Shop", "Optical Shop", "Record Shop",
                    "Camera Store", "Antique Shop", "Bike Shop", "Outlet Store", "Discount Store",
                    "Flower Shop", "Video Store", "Newsstand", "Lingerie Store", "Kids Store")),
    "grocery": CategoryRow(
        osm={"shop": "supermarket convenience greengrocer butcher seafood cheese dairy farm deli "
                     "frozen_food health_food organic alcohol beverages wine grocery spices",
             "amenity": "marketplace",
             "building": "supermarket"},
        fclass="market_place green_market",
        foursquare=("Food & Drink Shop", "Deli / Bodega", "Convenience Store", "Market",
                    "Grocery Store", "Supermarket", "Farmers Market", "Liquor Store", "Wine Shop",
                    "Butcher", "Gourmet Shop", "Cheese Shop", "Fish Market", "Organic Grocery",
                    "Health Food Store")),
    "education": CategoryRow(
        osm={"amenity": "school university college kindergarten library language_school "
                        "driving_school music_school research_institute training prep_school "
                        "dancing_school childcare toy_library",
             "building": "school university college kindergarten",
             "landuse": "education"},
        fclass="preschool daycare",
        foursquare=("College Academic Building", "University", "School", "Community College",
                    "General College & University", "Library", "High School", "Nursery School",
                    "Student Center", "Law School", "Elementary School", "Trade School",
                    "Middle School", "College Library", "College Classroom", "Medical School",
                    "Language School", "Driving School", "Private School", "College Auditorium")),
    "health": CategoryRow(
        osm={"amenity": "hospital clinic doctors dentist pharmacy veterinary nursing_home",
             "healthcare": "*",
             "emergency": "ambulance_station",
             "building": "hospital"},
        fclass="urgent_care medical_laboratory chiropractic optometrist home_health_care health "
               "healthcare family_health_clinic",
        foursquare=("Medical Center", "Drugstore / Pharmacy", "Hospital", "Doctor's Office",
                    "Dentist's Office", "Emergency Room", "Veterinarian", "Eye Doctor",
                    "Chiropractor", "Physical Therapist", "Mental Health Office", "Assisted Living",
                    "Pharmacy", "Nursing Home")),
    "transport": CategoryRow(
        osm={"amenity": "bus_station ferry_terminal taxi parking parking_entrance bicycle_parking "
                        "bicycle_rental motorcycle_parking car_sharing bicycle_repair_station",
             "public_transport": "station platform",
             "railway": "station halt tram_stop subway_entrance",
             "highway": "bus_stop",
             "aeroway": "aerodrome terminal helipad heliport",
             "building": "train_station transportation"},
        fclass="railway_station railway_halt taxi_rank airport airfield apron aerialway_station "
               "ticket_validator ticket_booth",
        foursquare=("Travel & Transport", "Subway", "Train Station", "Airport", "Bus Station",
                    "Ferry", "Light Rail", "Parking", "Taxi", "Road", "Bridge", "General Travel",
                    "Moving Target", "Travel Lounge", "Bus Stop", "Bus Line", "Train", "Platform",
                    "Metro Station", "Airport Terminal", "Airport Gate", "Tunnel", "Highway",
                    "Street", "Intersection", "Boat or Ferry", "Rest Area", "Parking Garage")),
    "parks_leisure": CategoryRow(
        osm={"leisure": "* park garden playground nature_reserve dog_park common marina "
                        "beach_resort bandstand",
             "tourism": "picnic_site",
             "amenity": "bbq fountain boat_rental",
             "natural": "beach",
             "landuse": "recreation_ground village_green"},
        foursquare=("Park", "Other Great Outdoors", "Outdoors & Recreation", "Plaza", "Garden",
                    "Playground", "Beach", "River", "Dog Run", "Lake", "Pier", "Trail",
                    "National Park", "Forest", "Island", "Mountain", "Bike Trail",
                    "Harbor / Marina")),
    "sport": CategoryRow(
        osm={"leisure": "sports_centre stadium pitch track fitness_centre fitness_station "
                        "swimming_pool ice_rink golf_course sports_hall horse_riding "
                        "disc_golf_course",
             "sport": "*",
             "amenity": "dojo gym",
             "building": "stadium sports_hall sports_centre grandstand"},
        fclass="tennis_court fitness_center health_club personal_training martial_arts",
        foursquare=("Gym / Fitness Center", "Stadium", "Athletic & Sport", "Racetrack",
                    "College Stadium", "Gym", "Yoga Studio", "Tennis Court", "Basketball Court",
                    "Baseball Field", "Soccer Field", "Golf Course", "Pool", "Skating Rink",
                    "Martial Arts Dojo", "Boxing Gym", "Climbing Gym", "Track", "Hockey Arena",
                    "Baseball Stadium", "Basketball Stadium", "Football Stadium", "Cycle Studio",
                    "Pilates Studio", "College Gym")),
    "culture_tourism": CategoryRow(
        osm={"tourism": "museum gallery attraction artwork viewpoint zoo aquarium information",
             "historic": "* monument memorial castle ruins archaeological_site",
             "amenity": "planetarium",
             "man_made": "lighthouse obelisk"},
        fclass="art archaeological wayside_cross wayside_shrine battlefield fort tourist_info "
               "tower_observation binoculars",
        foursquare=("Art Museum", "Historic Site", "Museum", "Science Museum", "History Museum",
                    "Art Gallery", "Sculpture Garden", "Scenic Lookout", "Zoo", "Aquarium",
                    "Monument / Landmark", "Castle", "Memorial Site", "Public Art",
                    "Outdoor Sculpture", "Planetarium", "Tourist Information Center")),
    "entertainment": CategoryRow(
        osm={"amenity": "cinema theatre arts_centre casino events_venue music_venue "
                        "conference_centre exhibition_centre gambling",
             "leisure": "amusement_arcade bowling_alley escape_game adult_gaming_centre "
                        "water_park miniature_golf dance trampoline_park",
             "tourism": "theme_park"},
        foursquare=("Arts & Entertainment", "Movie Theater", "Indie Movie Theater", "Multiplex",
                    "Music Venue", "General Entertainment", "Theater", "Performing Arts Venue",
                    "Event Space", "Arcade", "Concert Hall", "Bowling Alley", "Casino",
                    "Comedy Club", "Convention Center", "Pool Hall", "Jazz Club", "Rock Club",
                    "Opera House", "Theme Park", "Water Park", "Amphitheater", "Dance Studio")),
    "accommodation": CategoryRow(
        osm={"tourism": "hotel hostel motel guest_house apartment chalet camp_site caravan_site "
                        "alpine_hut wilderness_hut",
             "building": "hotel"},
        fclass="bed_and_breakfast guesthouse",
        foursquare=("Hotel", "Hostel", "Motel", "Bed & Breakfast", "Resort", "Campground",
                    "Boarding House", "Inn")),
    "office_work": CategoryRow(
        osm={"office": "*",
             "amenity": "bank atm bureau_de_change money_transfer coworking_space studio "
                        "payment_centre",
             "building": "office commercial",
             "landuse": "commercial"},
        fclass="payment_center notary recruitment_center office",
        foursquare=("Office", "Bank", "Financial or Legal Service", "Coworking Space",
                    "Tech Startup", "Conference Room", "ATM", "Insurance Office", "Meeting Room",
                    "Design Studio", "Non-Profit", "Real Estate Office", "TV Station",
                    "Radio Station")),
    "personal_services": CategoryRow(
        osm={"shop": "hairdresser beauty laundry dry_cleaning massage tattoo shoe_repair tailor "
                     "funeral_directors travel_agency copyshop",
             "craft": "*",
             "amenity": "internet_cafe animal_boarding animal_shelter",
             "leisure": "sauna tanning_salon"},
        fclass="nail_salon salon cleaner spa psychic",
        foursquare=("Salon / Barbershop", "Laundry Service", "Spa / Massage", "Tanning Salon",
                    "Funeral Home", "Nail Salon", "Dry Cleaner", "Tailor Shop", "Tattoo Parlor",
                    "Spa", "Massage Studio", "Locksmith", "Travel Agency", "Laundromat",
                    "Pet Service", "Shipping Store")),
    "public_service": CategoryRow(
        osm={"amenity": "townhall police fire_station post_office courthouse prison embassy "
                        "community_centre social_facility social_centre public_building "
                        "ranger_station post_depot",
             "office": "government diplomatic",
             "building": "civic public government fire_station",
             "landuse": "military"},
        fclass="town_hall consulate social_center",
        foursquare=("Government Building", "Post Office", "Military Base", "City Hall",
                    "Courthouse", "Police Station", "Fire Station", "Embassy / Consulate",
                    "Community Center", "DMV", "Town Hall", "Capitol Building", "Prison")),
    "religion": CategoryRow(
        osm={"amenity": "place_of_worship monastery grave_yard crematorium",
             "religion": "*",
             "building": "church cathedral chapel mosque temple synagogue shrine religious "
                         "monastery",
             "landuse": "cemetery religious"},
        fclass="graveyard christian christian_anglican christian_catholic christian_evangelical "
               "christian_lutheran christian_methodist christian_orthodox christian_protestant "
               "christian_baptist christian_mormon jewish muslim muslim_sunni muslim_shia "
               "buddhist hindu taoist shintoist sikh",
        foursquare=("Church", "Shrine", "Temple", "Spiritual Center", "Cemetery", "Mosque",
                    "Synagogue", "Buddhist Temple", "Hindu Temple", "Monastery")),
    "residential": CategoryRow(
        osm={"landuse": "residential",
             "building": "house apartments residential detached semidetached_house terrace "
                         "dormitory bungalow"},
        fclass="trailer_park",
        foursquare=("Home (private)", "Residential Building (Apartment / Condo)",
                    "Housing Development", "Fraternity House", "Sorority House",
                    "College Residence Hall")),
    "industrial": CategoryRow(
        osm={"landuse": "industrial quarry construction",
             "building": "industrial warehouse factory manufacture",
             "man_made": "works wastewater_plant water_works",
             "craft": "brewery distillery winery sawmill"},
        fclass="self_storage",
        foursquare=("Factory", "Warehouse", "Storage Facility", "Industrial Estate",
                    "Power Plant")),
    "automotive": CategoryRow(
        osm={"amenity": "fuel car_wash car_rental charging_station vehicle_inspection",
             "shop": "car car_repair car_parts tyres motorcycle motorcycle_repair"},
        fclass="car_dealership",
        foursquare=("Gas Station / Garage", "Automotive Shop", "Car Dealership", "Car Wash",
                    "Auto Garage", "Rental Car Location", "Motorcycle Shop", "Auto Workshop",
                    "Gas Station")),
    "other": CategoryRow(
        osm={},
        foursquare=("Building", "Professional & Other Places")),
}

# Features that exist but are not places people go to: they never decide a category.
NOT_DESTINATIONS = CategoryRow(
    osm={"amenity": "bench waste_basket waste_disposal recycling post_box telephone "
                    "vending_machine drinking_water toilets clock shelter emergency_phone "
                    "hunting_stand water_point watering_place grit_bin life_ring public_bookcase "
                    "parking_space loading_dock smoking_area shower signpost give_box",
         "leisure": "picnic_table outdoor_seating firepit",
         "shop": "vacant no disused"},
    fclass="toilet camera_surveillance fire_hydrant emergency_access vending_cigarette "
           "vending_parking vending_any wifi smoking_station waste_container water_well tower "
           "tower_comms water_tower water_mill windmill picnic_table",
    foursquare=("Neighborhood", "City", "Town", "Village", "County", "State", "Country",
                "States & Municipalities"),
)

# Long-tail Foursquare names: the first word found, reading from the head noun (last word)
# backwards, decides. Exact names in TAXONOMY always win over these words.
FOURSQUARE_WORDS: dict[str, str] = {
    **dict.fromkeys("restaurant joint place diner cafe coffee bakery pizzeria bistro steakhouse "
                    "food eatery buffet creperie noodle noodles grill kitchen cafeteria taqueria "
                    "brasserie trattoria dessert bagel donut burger sushi tea".split(), "food_drink"),
    **dict.fromkeys("bar pub lounge nightclub speakeasy brewery taproom karaoke club "
                    "nightlife".split(), "nightlife"),
    **dict.fromkeys("shop store boutique mall outlet bookstore".split(), "retail"),
    **dict.fromkeys("grocery supermarket market bodega butcher liquor".split(), "grocery"),
    **dict.fromkeys("school college university library kindergarten preschool daycare academy "
                    "campus".split(), "education"),
    **dict.fromkeys("hospital medical doctor dentist clinic pharmacy drugstore emergency "
                    "physician chiropractor optometrist veterinarian therapist rehab healthcare "
                    "hospice".split(), "health"),
    **dict.fromkeys("station airport terminal subway metro train rail bus ferry parking taxi "
                    "tram platform road bridge tunnel highway street intersection boat "
                    "heliport travel".split(), "transport"),
    **dict.fromkeys("park garden playground beach trail lake river forest outdoors plaza pier "
                    "square marina harbor island mountain".split(), "parks_leisure"),
    **dict.fromkeys("gym stadium field court rink pool arena track fitness golf course yoga "
                    "pilates boxing climbing dojo racetrack velodrome tennis baseball basketball "
                    "soccer football hockey skating".split(), "sport"),
    **dict.fromkeys("museum gallery monument landmark memorial historic aquarium castle palace "
                    "lookout viewpoint sculpture zoo planetarium exhibit".split(),
                    "culture_tourism"),
    **dict.fromkeys("theater theatre cinema multiplex venue arcade casino bowling amphitheater "
                    "auditorium circus concert opera comedy entertainment amusement".split(),
                    "entertainment"),
    **dict.fromkeys("hotel hostel motel inn resort lodge campground".split(), "accommodation"),
    **dict.fromkeys("office bank coworking startup corporate financial conference atm "
                    "insurance".split(), "office_work"),
    **dict.fromkeys("salon barbershop spa massage laundry laundromat tailor repair service "
                    "services cleaner cleaners tattoo locksmith".split(), "personal_services"),
    **dict.fromkeys("government police courthouse embassy consulate military prison jail dmv "
                    "municipal".split(), "public_service"),
    **dict.fromkeys("church temple mosque synagogue shrine cemetery chapel spiritual monastery "
                    "cathedral".split(), "religion"),
    **dict.fromkeys("home residential apartment apartments condo housing dorm dormitory "
                    "residence".split(), "residential"),
    **dict.fromkeys("factory warehouse industrial plant".split(), "industrial"),
    **dict.fromkeys("gas auto automotive car dealership motorcycle garage tire tires "
                    "fuel".split(), "automotive"),
}
# fmt: on


def _build_osm_index() -> tuple[dict[tuple[str, str], str], dict[str, str], set[tuple[str, str]]]:
    values: dict[tuple[str, str], str] = {}
    wildcards: dict[str, str] = {}
    for category, row in TAXONOMY.items():
        for key, text in row.osm.items():
            assert key in OSM_KEYS, f"{key} missing from OSM_KEYS"
            for value in text.split():
                if value == "*":
                    assert key not in wildcards, f"{key}=* mapped twice"
                    wildcards[key] = category
                else:
                    assert (key, value) not in values, f"{key}={value} mapped twice"
                    values[(key, value)] = category
    ignored = {(k, v) for k, text in NOT_DESTINATIONS.osm.items() for v in text.split()}
    assert not ignored & values.keys(), ignored & values.keys()
    return values, wildcards, ignored


_OSM_VALUES, _OSM_WILDCARDS, _OSM_IGNORED = _build_osm_index()


def _build_fclass_index() -> dict[str, str | None]:
    index: dict[str, str | None] = {}
    # Geofabrik's own class names first: its "art" is tourism=artwork, not shop=art.
    for category, row in TAXONOMY.items():
        for value in row.fclass.split():
            assert value not in index, f"fclass {value} mapped twice"
            index[value] = category
    for value in NOT_DESTINATIONS.fclass.split():
        assert value not in index, f"fclass {value} both mapped and ignored"
        index[value] = None
    for key in OSM_KEYS:  # key order decides a value used by several keys ("station")
        for (k, value), category in _OSM_VALUES.items():
            if k == key:
                index.setdefault(value, category)
    for _, value in _OSM_IGNORED:
        index.setdefault(value, None)
    return index


_FCLASS = _build_fclass_index()
_FCLASS_SORTED = sorted(_FCLASS)


def _fold(name: str) -> str:
    """Casefold, strip accents ("Café" -> "cafe") and collapse runs of spaces."""
    decomposed = unicodedata.normalize("NFKD", name)
    plain = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(plain.casefold().split())


def _build_foursquare_index() -> dict[str, str | None]:
    index: dict[str, str | None] = {}
    for category, row in TAXONOMY.items():
        for name in row.foursquare:
            assert _fold(name) not in index, f"Foursquare {name!r} mapped twice"
            index[_fold(name)] = category
    for name in NOT_DESTINATIONS.foursquare:
        assert _fold(name) not in index, f"Foursquare {name!r} both mapped and ignored"
        index[_fold(name)] = None
    assert set(FOURSQUARE_WORDS.values()) <= set(CATEGORIES)
    return index


_FOURSQUARE = _build_foursquare_index()
assert tuple(TAXONOMY) == CATEGORIES, "TAXONOMY rows must follow CATEGORIES"


def _osm_value(raw: object) -> str | None:
    """A usable tag value: strings only (tables hold NaN for absent tags); first of "a;b"."""
    if not isinstance(raw, str):
        return None
    value = raw.split(";", 1)[0].strip().lower()
    return value or None


def match_osm_tags(tags: Mapping[str, object]) -> tuple[str | None, str | None]:
    """Category of an OSM feature and the tag that decided it.

    Parameters
    ----------
    tags
        The feature's tags (``key -> value``); non-string values count as absent.

    Returns
    -------
    tuple
        ``(category, "key=value")`` for the deciding tag; ``(None, "key=value")`` with the first
        known tag when no tag maps to a category; ``(None, None)`` when no key of
        :data:`OSM_KEYS` is present.
    """
    first: str | None = None
    for key in OSM_KEYS:
        value = _osm_value(tags.get(key))
        if value is None:
            continue
        label = f"{key}={value}"
        first = first or label
        if (key, value) in _OSM_IGNORED:
            continue
        category = _OSM_VALUES.get((key, value)) or _OSM_WILDCARDS.get(key)
        if category is not None:
            return category, label
    return None, first


def _fclass_key(value: str) -> str:
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def category_from_fclass(value: object) -> str | None:
    """Functional category of a Geofabrik ``fclass`` value (or a bare OSM value), or None.

    Case, spaces and hyphens are normalised (``"Fast food"`` -> ``fast_food``); a truncated value
    of three or more letters maps when every known value it starts has the same category.
    """
    if not isinstance(value, str):
        return None
    key = _fclass_key(value)
    if key in _FCLASS:
        return _FCLASS[key]
    if len(key) < 3:
        return None
    found: set[str | None] = set()
    for known in _FCLASS_SORTED[bisect_left(_FCLASS_SORTED, key) :]:
        if not known.startswith(key):
            break
        found.add(_FCLASS[known])
    return found.pop() if len(found) == 1 else None


def category_from_foursquare(name: object) -> str | None:
    """Functional category of a Foursquare venue category name, or None.

    Exact names of :data:`TAXONOMY` first (case and accents ignored), then
    :data:`FOURSQUARE_WORDS` from the last word of the name backwards.
    """
    if not isinstance(name, str):
        return None
    folded = _fold(name)
    if folded in _FOURSQUARE:
        return _FOURSQUARE[folded]
    for word in reversed(re.findall(r"[a-z]+", folded)):
        if word in FOURSQUARE_WORDS:
            return FOURSQUARE_WORDS[word]
    return None


def not_a_destination(source: str) -> bool:
    """Whether a POI source label names something deliberately left out (a bench, a post box).

    Parameters
    ----------
    source
        A label as in the POI frame's ``source`` column: ``"osm:amenity=bench"``,
        ``"fclass:bench"`` or ``"foursquare:Neighborhood"``.
    """
    vocabulary, _, label = source.partition(":")
    if vocabulary == "osm":
        key, _, value = label.partition("=")
        return (key, _osm_value(value)) in _OSM_IGNORED
    if vocabulary == "fclass":
        key = _fclass_key(label)
        return key in _FCLASS and _FCLASS[key] is None
    if vocabulary == "foursquare":
        folded = _fold(label)
        return folded in _FOURSQUARE and _FOURSQUARE[folded] is None
    return False


def osm_query_tags() -> dict[str, bool | list[str]]:
    """The tag filter for Overpass/OSMnx and pyrosm queries, derived from :data:`TAXONOMY`.

    Keys whose every value is a POI (``amenity``, ``shop``, ...) are queried whole, so that
    unmapped values come back and are counted as skipped rather than silently never asked for.
    Infrastructure keys (``railway``, ``highway``, ``landuse``...) are queried for their mapped
    values only (``railway=True`` would fetch every rail segment). ``building`` is left out:
    a city has hundreds of thousands of buildings, and function keys already cover the ones
    that are destinations; ``building`` still decides for features fetched by another key.
    """
    whole = {"amenity", "shop", "healthcare", "office", "craft", "leisure", "tourism", "sport",
             "historic", "religion"}  # fmt: skip
    query: dict[str, bool | list[str]] = {}
    for key in OSM_KEYS:
        if key == "building":
            continue
        if key in whole:
            query[key] = True
        else:
            values = sorted(v for (k, v) in _OSM_VALUES if k == key)
            if values:
                query[key] = values
    return query


# Plain-English names for the categories, for charts, heatmap columns and expert texts.
CATEGORY_LABELS: dict[str, str] = {c: c.replace("_", " ") for c in CATEGORIES} | {
    "food_drink": "food & drink", "parks_leisure": "parks & leisure",
    "culture_tourism": "culture & tourism", "office_work": "offices & work",
}
