"""The built-in vocabulary a map names its clusters from: everyday photo subjects.

A few hundred concepts, scenes and objects that fill real photo libraries (people and
occasions, animals, food, places, nature, things, documents and screens), each phrased as a
person would search for it; each is prompt-ensembled like a query (photosearch/query.py)
and its vector cached in the library, so only the first map pays for embedding them.
`photosearch map --labels/--labels-file` replaces the list.
"""

from __future__ import annotations

VOCABULARY: tuple[str, ...] = tuple(
    line.strip()
    for line in """
    people
    a portrait
    a selfie
    a group photo
    a family
    a baby
    children
    a couple
    friends
    a crowd
    a wedding
    a birthday party
    a party
    a concert
    a festival
    a graduation
    a sports game
    a football match
    a basketball game
    a tennis match
    running
    swimming
    cycling
    skiing
    snowboarding
    surfing
    hiking
    climbing
    camping
    fishing
    yoga
    dancing
    a dog
    a puppy
    a cat
    a kitten
    a horse
    a cow
    a sheep
    a pig
    a goat
    a chicken
    a duck
    a bird
    a seagull
    a pigeon
    a parrot
    an owl
    a fish
    an aquarium
    a butterfly
    a bee
    an insect
    a spider
    a snake
    a lizard
    a turtle
    a frog
    a rabbit
    a squirrel
    a deer
    a bear
    an elephant
    a giraffe
    a lion
    a tiger
    a zebra
    a monkey
    a zoo
    a farm
    food
    a meal
    breakfast
    a salad
    a pizza
    a burger
    pasta
    sushi
    soup
    a sandwich
    bread
    a cake
    a birthday cake
    dessert
    ice cream
    cookies
    fruit
    vegetables
    a barbecue
    a restaurant
    a cafe
    coffee
    tea
    wine
    beer
    cocktails
    a kitchen
    cooking
    a beach
    the sea
    the ocean
    waves
    a lake
    a river
    a waterfall
    a mountain
    mountains with snow
    a valley
    a hill
    a forest
    trees
    a park
    a garden
    flowers
    a rose
    a tulip
    a sunflower
    a field
    grass
    a desert
    sand dunes
    a canyon
    a cave
    rocks
    a cliff
    an island
    a volcano
    a glacier
    snow
    ice
    rain
    fog
    clouds
    the sky
    a sunset
    a sunrise
    the night sky
    stars
    the moon
    a rainbow
    lightning
    autumn leaves
    a city
    a skyline
    a street
    a road
    a highway
    a bridge
    a tunnel
    a building
    a skyscraper
    a house
    an apartment
    a church
    a cathedral
    a temple
    a mosque
    a castle
    a palace
    a tower
    a monument
    a statue
    a museum
    an art gallery
    a painting
    a sculpture
    graffiti
    a market
    a shop
    a supermarket
    a shopping mall
    a hotel
    a hotel room
    an airport
    a train station
    a harbour
    a marina
    a lighthouse
    a stadium
    a playground
    a swimming pool
    a square
    a fountain
    ruins
    a village
    a town
    a farmhouse
    a barn
    a car
    a vintage car
    a truck
    a bus
    a train
    a tram
    a motorcycle
    a bicycle
    a scooter
    a boat
    a sailboat
    a ship
    a plane
    a helicopter
    a living room
    a bedroom
    a bathroom
    an office
    a desk
    a classroom
    a library
    stairs
    a window
    a door
    a table
    a chair
    a sofa
    a bed
    a lamp
    a television
    a computer
    a laptop
    a phone
    a screenshot
    a screen
    a keyboard
    a camera
    headphones
    a watch
    jewellery
    shoes
    clothes
    a dress
    a hat
    a bag
    glasses
    toys
    a teddy bear
    a doll
    a board game
    a book
    books
    a magazine
    a newspaper
    a document
    a receipt
    a letter
    a handwritten note
    a whiteboard
    a diagram
    a chart
    a map
    a ticket
    a sign
    a poster
    text
    a logo
    a drawing
    a sketch
    a cartoon
    a meme
    a musical instrument
    a guitar
    a piano
    a drum kit
    tools
    a workshop
    a construction site
    a factory
    machines
    a christmas tree
    christmas decorations
    fireworks
    halloween
    easter eggs
    candles
    balloons
    presents
    a flag
    a car interior
    a dashboard
    an x-ray
    a medical scan
    a plant
    a houseplant
    a cactus
    a tree
    a leaf
    mushrooms
    a close-up
    a macro photo
    a landscape
    an aerial view
    a panorama
    an underwater photo
    a black and white photo
    a blurry photo
    a dark photo
    a night photo
    a silhouette
    a reflection
    a shadow
    lights
    neon lights
    a pattern
    a texture
    a wall
    a fence
    a gate
    a garage
    a parking lot
    traffic
    a crowd of people
    a protest
    a parade
    a ceremony
    a funeral
    a hospital
    a doctor
    a nurse
    a police officer
    a soldier
    a chef
    a musician
    a painter
    an athlete
    a hand
    a face
    eyes
    hair
    a tattoo
    feet
    """.strip().splitlines()
    if line.strip()
)
