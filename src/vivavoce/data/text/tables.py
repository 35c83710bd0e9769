"""Fact tables and templates for user turns (version in prompts.TEXT_VERSION). Plain words only: every entry is
said aloud, so no digits, abbreviations or symbols."""

COUNTRIES = [
    ("France", "Paris", "French"), ("Germany", "Berlin", "German"), ("Italy", "Rome", "Italian"),
    ("Spain", "Madrid", "Spanish"), ("Portugal", "Lisbon", "Portuguese"), ("Japan", "Tokyo", "Japanese"),
    ("China", "Beijing", "Chinese"), ("India", "New Delhi", "Indian"), ("Brazil", "Brasilia", "Brazilian"),
    ("Canada", "Ottawa", "Canadian"), ("Mexico", "Mexico City", "Mexican"), ("Egypt", "Cairo", "Egyptian"),
    ("Kenya", "Nairobi", "Kenyan"), ("Australia", "Canberra", "Australian"), ("Norway", "Oslo", "Norwegian"),
    ("Sweden", "Stockholm", "Swedish"), ("Finland", "Helsinki", "Finnish"), ("Poland", "Warsaw", "Polish"),
    ("Greece", "Athens", "Greek"), ("Turkey", "Ankara", "Turkish"), ("Russia", "Moscow", "Russian"),
    ("Argentina", "Buenos Aires", "Argentinian"), ("Chile", "Santiago", "Chilean"), ("Peru", "Lima", "Peruvian"),
    ("Ireland", "Dublin", "Irish"), ("Scotland", "Edinburgh", "Scottish"), ("Austria", "Vienna", "Austrian"),
    ("Hungary", "Budapest", "Hungarian"), ("Thailand", "Bangkok", "Thai"), ("Vietnam", "Hanoi", "Vietnamese"),
    ("Morocco", "Rabat", "Moroccan"), ("Nigeria", "Abuja", "Nigerian"), ("Iceland", "Reykjavik", "Icelandic"),
    ("Denmark", "Copenhagen", "Danish"), ("Belgium", "Brussels", "Belgian"), ("Switzerland", "Bern", "Swiss"),
    ("New Zealand", "Wellington", "New Zealand"), ("South Korea", "Seoul", "Korean"), ("Cuba", "Havana", "Cuban"),
    ("Indonesia", "Jakarta", "Indonesian"),
]  # fmt: skip
COUNTRY_TEMPLATES = [
    "What is the capital of {country}?", "What language do people speak in {country}?",
    "What is {capital} famous for?", "What is a traditional {adj} dish?", "Is {country} a good place to visit in winter?",
    "What should I see if I go to {capital}?", "Tell me something interesting about {country}.",
]  # fmt: skip

ANIMALS = [
    "elephants", "dolphins", "octopuses", "penguins", "owls", "bees", "wolves", "giraffes", "koalas", "sharks",
    "frogs", "bats", "eagles", "tigers", "horses", "cats", "dogs", "rabbits", "snails", "whales", "crows",
    "parrots", "turtles", "camels", "zebras", "ants", "butterflies", "foxes", "bears", "otters", "squirrels",
    "hedgehogs", "jellyfish", "lions", "kangaroos", "flamingos", "seals", "spiders", "gorillas", "hamsters",
]  # fmt: skip
ANIMAL_TEMPLATES = [
    "What do {animal} eat?", "Where do {animal} live?", "How long do {animal} usually live?",
    "Tell me a fun fact about {animal}.", "Why are {animal} important for nature?", "Are {animal} clever animals?",
]  # fmt: skip

CONCEPTS = [
    "photosynthesis", "gravity", "electricity", "the internet", "a rainbow", "a volcano", "an earthquake",
    "the moon's phases", "a black hole", "the water cycle", "climate change", "a vaccine", "democracy",
    "inflation", "a battery", "a solar panel", "the immune system", "evolution", "a computer program",
    "a neural network", "the tides", "thunder", "a magnet", "sound", "light", "the seasons", "a recipe",
    "sleep", "memory", "a credit card", "recycling", "the stock market", "a telescope", "a microwave oven",
    "an airplane wing", "a heartbeat", "the ozone layer", "a glacier", "compound interest", "a hurricane",
    "a calendar", "an eclipse", "a bicycle gear", "a refrigerator", "wind power", "a bridge", "a lighthouse",
    "a compass", "the stars", "bread rising",
]  # fmt: skip
CONCEPT_TEMPLATES = [
    "What is {concept}?", "How does {concept} work?", "Explain {concept} in simple words.",
    "Can you explain {concept} to a child?", "Why does {concept} matter?", "Describe {concept} in one sentence.",
]  # fmt: skip

FOODS = [
    "rice", "pasta", "an omelette", "pancakes", "soup", "bread", "a salad", "porridge", "curry", "tea",
    "coffee", "a smoothie", "roast vegetables", "fried rice", "lemonade", "hummus", "a sandwich", "noodles",
    "mashed potatoes", "a pizza", "cookies", "a fruit salad", "scrambled eggs", "chili", "risotto", "tacos",
    "a stew", "guacamole", "popcorn", "muffins",
]  # fmt: skip
FOOD_TEMPLATES = [
    "How do I make {food}?", "What goes well with {food}?", "Is {food} healthy?",
    "Give me a quick tip for making {food}.", "How long does {food} take to prepare?",
]  # fmt: skip

PEOPLE = [
    "Marie Curie", "Albert Einstein", "Isaac Newton", "Ada Lovelace", "Leonardo da Vinci", "William Shakespeare",
    "Charles Darwin", "Nelson Mandela", "Frida Kahlo", "Mozart", "Beethoven", "Cleopatra", "Galileo",
    "Jane Austen", "Nikola Tesla", "Amelia Earhart", "Mahatma Gandhi", "Alan Turing", "Florence Nightingale",
    "Pablo Picasso", "Rosa Parks", "Confucius", "Aristotle", "Vincent van Gogh", "Martin Luther King",
    "Louis Pasteur", "Harriet Tubman", "Johann Sebastian Bach", "Grace Hopper", "Charles Dickens",
]  # fmt: skip
PEOPLE_TEMPLATES = [
    "Who was {person}?", "What is {person} known for?", "Why is {person} still remembered today?",
    "Tell me one fact about {person}.",
]  # fmt: skip

ACTIVITIES = [
    "running", "swimming", "cooking", "gardening", "reading more", "learning a language", "playing guitar",
    "painting", "saving money", "sleeping better", "studying", "meditating", "hiking", "cycling", "baking",
    "writing a story", "taking photos", "public speaking", "yoga", "chess", "drawing", "camping", "dancing",
    "knitting", "fishing", "coding", "singing", "juggling", "bird watching", "waking up early", "staying focused",
    "drinking more water", "making friends", "keeping a journal", "cleaning the house", "packing for a trip",
    "working from home", "walking every day", "learning to type", "playing the piano",
]  # fmt: skip
ACTIVITY_TEMPLATES = [
    "Give me a tip for {activity}.", "How do I get started with {activity}?", "Is {activity} good for my health?",
    "What do I need for {activity}?", "Help me get better at {activity}.",
]  # fmt: skip

TOPICS = [
    "space", "the ocean", "music", "history", "the weather", "football", "movies", "robots", "dinosaurs",
    "mountains", "trees", "chocolate", "trains", "pirates", "the desert", "castles", "video games", "art",
    "birds", "the rainforest", "ancient Rome", "the Moon", "clouds", "islands", "coffee", "cats", "numbers",
    "languages", "cities", "rivers", "winter", "summer", "holidays", "libraries", "the brain", "insects",
    "planets", "inventions", "farming", "poetry",
]  # fmt: skip
TOPIC_TEMPLATES = [
    "Tell me a joke about {topic}.", "Tell me something surprising about {topic}.", "Can you say more about {topic}?",
    "What else should I know about {topic}?", "Why do people love {topic}?", "Give me a short fact about {topic}.",
    "Say something nice about {topic}.",
]  # fmt: skip

FEELINGS = [
    "tired", "happy", "bored", "nervous", "excited", "a bit sad", "stressed", "lonely", "hungry", "relaxed",
    "curious", "grateful", "sleepy", "proud", "confused", "cold", "worried", "cheerful", "restless", "calm",
]  # fmt: skip
FEELING_TEMPLATES = [
    "I feel {feeling} today.", "I am {feeling}, what should I do?", "Why do I feel {feeling} in the evening?",
    "My friend is {feeling}, how can I help?", "Is it normal to feel {feeling}?",
]  # fmt: skip

PLACES = [
    "the beach", "the mountains", "a museum", "the park", "the library", "a concert", "the zoo", "the market",
    "a wedding", "the dentist", "a job interview", "the gym", "my grandmother's house", "a camping trip",
    "a football match", "the airport", "a new city", "the cinema", "a picnic", "the swimming pool",
    "a birthday party", "the office", "a farm", "the lake", "a bakery", "the train station", "school",
    "a restaurant", "the forest", "the hospital",
]  # fmt: skip
PLACE_TEMPLATES = [
    "I just got back from {place}.", "What should I bring to {place}?", "I am going to {place} tomorrow.",
    "What can I do at {place}?",
]  # fmt: skip

TASKS = [
    "tie a tie", "boil an egg", "change a tire", "plant a tree", "write a thank you note", "fold a paper plane",
    "clean a window", "make a budget", "train a puppy", "start a conversation", "fall asleep faster",
    "remember names", "wash wool", "read a map", "set up a tent", "make a good cup of tea", "iron a shirt",
    "write a poem", "learn a song", "keep plants alive", "back up my phone", "write a short email",
    "calm down before a test", "make my room tidy", "choose a good book", "say no politely", "start jogging",
    "care for a cat", "grow tomatoes", "sharpen a knife", "save energy at home", "make new friends",
    "prepare for a trip", "learn faster", "organise my desk", "stop procrastinating", "make a paper boat",
    "bake bread", "cool down a hot room", "take better notes",
]  # fmt: skip
TASK_TEMPLATES = [
    "How do I {task}?", "Tell me how to {task}.", "What is the easiest way to {task}?",
    "Can you help me {task}?",
]  # fmt: skip

NUMBER_WORDS = [
    "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "fifteen",
    "twenty", "twenty five", "thirty", "forty", "fifty", "sixty", "a hundred", "a thousand",
]  # fmt: skip
MATH_TEMPLATES = [
    "What is {a} plus {b}?", "What is {a} times {b}?", "What is {a} minus {b}?", "Is {a} bigger than {b}?",
]  # fmt: skip
UNITS = [("kilometres", "miles"), ("miles", "kilometres"), ("kilograms", "pounds"), ("litres", "cups"),
         ("hours", "minutes"), ("days", "weeks"), ("metres", "feet"), ("degrees Celsius", "degrees Fahrenheit")]  # fmt: skip
UNIT_TEMPLATE = "How many {b} are in {a} {u}?"

CHITCHAT = [
    "How are you today?", "What is your name?", "Do you like music?", "Can you tell me a joke?",
    "Good morning!", "Good night!", "Thank you, that was helpful.", "What can you do?", "Are you a robot?",
    "What is your favourite colour?", "Do you ever get tired?", "Tell me something cheerful.",
    "I had a great day today.", "I did not sleep well last night.", "It is raining again.",
    "I finally finished my project!", "Can we talk for a minute?", "What should I cook tonight?",
    "What is a good name for a dog?", "Give me a random fun fact.", "Say something to make me smile.",
    "What is the best time to go for a walk?", "Do you have a favourite book?", "Tell me a riddle.",
    "How do you pronounce your name?", "What day is it tomorrow if today is Monday?", "I am learning English.",
    "Can you speak more clearly?", "Sorry, I did not hear that.", "Could you repeat that please?",
    "That is interesting, tell me more.", "Why is that?", "Really? I did not know that.", "Are you sure?",
    "Can you give me an example?", "What do you mean?", "Okay, and then what?", "Can you make it shorter?",
    "Let us change the subject.", "What was I asking about?",
]  # fmt: skip
OPENERS = ["Hey,", "Quick question,", "Hi there,", "Excuse me,", "So,", "Um,", "Okay,", "Hello,"]
FOLLOW_UPS = ["And what about {x}?", "How about {x}?", "What about {x} then?"]
# Hearing drills (`prompts.drill_texts`): carrier sentences that say a table's thing in other words than the bank's
# templates, so each thing is heard more often (round 23: the speech LM hears only words said in many utterances).
DRILL_CARRIERS = [
    "Tell me about {x}.", "What do you know about {x}?", "I want to learn about {x}.", "Let us talk about {x}.",
    "Why do people like {x}?", "Is {x} interesting?", "My friend asked me about {x}.",
    "Could you teach me something about {x}?", "I read an article about {x} yesterday.",
    "What is your opinion of {x}?", "Please say a few words about {x}.", "Give me one fact about {x}.",
]  # fmt: skip
