"""A small app-like schema with realistic rows (seeded, so every demo looks the same).

Tables: users, listings, bookings, messages, reviews, notifications, audit_log.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from typing import Any

SCHEMA_SQL = """
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    full_name text NOT NULL,
    city text,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz
);
CREATE TABLE listings (
    id bigserial PRIMARY KEY,
    host_id bigint NOT NULL REFERENCES users(id),
    title text NOT NULL,
    city text NOT NULL,
    price_cents integer NOT NULL CHECK (price_cents > 0),
    description text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX listings_city_idx ON listings (city);
CREATE TABLE bookings (
    id bigserial PRIMARY KEY,
    listing_id bigint NOT NULL REFERENCES listings(id),
    guest_id bigint NOT NULL REFERENCES users(id),
    check_in date NOT NULL,
    nights integer NOT NULL CHECK (nights > 0),
    status text NOT NULL,
    total_cents integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX bookings_guest_idx ON bookings (guest_id);
CREATE INDEX bookings_listing_idx ON bookings (listing_id, check_in);
CREATE TABLE messages (
    id bigserial PRIMARY KEY,
    booking_id bigint REFERENCES bookings(id),
    sender_id bigint NOT NULL REFERENCES users(id),
    body text NOT NULL,
    sent_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX messages_booking_idx ON messages (booking_id);
CREATE TABLE reviews (
    id bigserial PRIMARY KEY,
    booking_id bigint NOT NULL REFERENCES bookings(id),
    rating smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    body text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE notifications (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users(id),
    kind text NOT NULL,
    payload jsonb NOT NULL,
    read_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_user_idx ON notifications (user_id) WHERE read_at IS NULL;
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    actor_id bigint,
    action text NOT NULL,
    entity text NOT NULL,
    entity_id bigint,
    details jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_created_idx ON audit_log (created_at);
"""

FIRST = ["Ana", "Ben", "Chloé", "Dmitri", "Elif", "Farah", "Gustav", "Hana", "Ivan", "Jana", "Kwame", "Lena", "Mateo", "Nia", "Omar", "Priya", "Quinn", "Rosa", "Sven", "Tomás", "Uma", "Viktor", "Wen", "Ximena", "Yusuf", "Zoe"]
LAST = ["Silva", "Müller", "Okafor", "Nguyen", "Kowalski", "Haddad", "Rossi", "Tanaka", "Johansson", "García", "Novak", "Schmidt", "Dubois", "Costa", "Petrov", "Khan", "Moreau", "Larsen", "Yilmaz", "Fischer"]
CITIES = ["Lisbon", "Berlin", "Lagos", "Hanoi", "Kraków", "Beirut", "Rome", "Osaka", "Stockholm", "Madrid", "Prague", "Vienna", "Lyon", "Porto", "Sofia", "Karachi", "Paris", "Oslo", "Izmir", "Hamburg"]
ADJ = ["Sunny", "Quiet", "Cosy", "Bright", "Modern", "Rustic", "Spacious", "Charming", "Central", "Historic", "Airy", "Minimalist"]
KIND = ["loft", "studio", "flat", "cottage", "room", "apartment", "townhouse", "cabin"]
WORDS = ["the", "a", "lovely", "view", "near", "station", "quiet", "street", "kitchen", "balcony", "garden", "wifi", "fast", "clean", "host", "helpful", "check-in", "late", "early", "arrived", "keys", "easy", "parking", "noisy", "bed", "comfortable", "shower", "hot", "breakfast", "great", "would", "stay", "again", "recommend", "location", "perfect", "small", "but", "enough", "for", "two"]
STATUSES = ["confirmed"] * 7 + ["cancelled", "pending", "completed", "completed", "completed"]
ACTIONS = ["login", "logout", "update_profile", "create_listing", "book", "cancel_booking", "send_message",
           "review", "password_reset"]

DEFAULT_SIZES = {"users": 2000, "listings": 1500, "bookings": 8000, "messages": 15000, "reviews": 3000,
                 "notifications": 12000, "audit_log": 25000}


def _sentence(rng: random.Random, lo: int, hi: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(lo, hi))).capitalize() + "."


def seed(conn: Any, sizes: dict[str, int] | None = None, seed_value: int = 42) -> dict[str, int]:
    """Create the schema and fill it.  Returns row counts per table."""
    n = {**DEFAULT_SIZES, **(sizes or {})}
    rng = random.Random(seed_value)
    now = datetime(2026, 11, 1, tzinfo=UTC)
    conn.execute(SCHEMA_SQL)
    with conn.cursor() as cur:
        with cur.copy("COPY users (email, full_name, city, created_at, last_login_at) FROM STDIN") as cp:
            for i in range(n["users"]):
                f, la = rng.choice(FIRST), rng.choice(LAST)
                created = now - timedelta(days=rng.randint(1, 900), seconds=rng.randint(0, 86400))
                login = created + timedelta(days=rng.randint(0, 60)) if rng.random() < 0.85 else None
                cp.write_row((f"{f.lower()}.{la.lower()}{i}@example.com", f"{f} {la}", rng.choice(CITIES),
                              created, login))
        with cur.copy("COPY listings (host_id, title, city, price_cents, description, created_at) FROM STDIN") as cp:
            for _ in range(n["listings"]):
                cp.write_row((rng.randint(1, n["users"]), f"{rng.choice(ADJ)} {rng.choice(KIND)}",
                              rng.choice(CITIES), rng.randint(35, 400) * 100, _sentence(rng, 12, 40),
                              now - timedelta(days=rng.randint(1, 700))))
        with cur.copy("COPY bookings (listing_id, guest_id, check_in, nights, status, total_cents, created_at) "
                      "FROM STDIN") as cp:
            for _ in range(n["bookings"]):
                nights = rng.randint(1, 14)
                created = now - timedelta(days=rng.randint(1, 600))
                cp.write_row((rng.randint(1, n["listings"]), rng.randint(1, n["users"]),
                              (created + timedelta(days=rng.randint(3, 90))).date(), nights, rng.choice(STATUSES),
                              nights * rng.randint(35, 400) * 100, created))
        with cur.copy("COPY messages (booking_id, sender_id, body, sent_at) FROM STDIN") as cp:
            for _ in range(n["messages"]):
                cp.write_row((rng.randint(1, n["bookings"]), rng.randint(1, n["users"]), _sentence(rng, 4, 30),
                              now - timedelta(minutes=rng.randint(1, 600 * 1440))))
        with cur.copy("COPY reviews (booking_id, rating, body, created_at) FROM STDIN") as cp:
            for _ in range(n["reviews"]):
                cp.write_row((rng.randint(1, n["bookings"]), rng.choices([1, 2, 3, 4, 5], [1, 2, 5, 15, 25])[0],
                              _sentence(rng, 6, 50), now - timedelta(days=rng.randint(1, 500))))
        with cur.copy("COPY notifications (user_id, kind, payload, read_at, created_at) FROM STDIN") as cp:
            for _ in range(n["notifications"]):
                created = now - timedelta(minutes=rng.randint(1, 200 * 1440))
                kind = rng.choice(["booking_confirmed", "new_message", "review_received", "price_drop"])
                cp.write_row((rng.randint(1, n["users"]), kind,
                              json.dumps({"ref": rng.randint(1, n["bookings"]), "kind": kind}),
                              created + timedelta(hours=rng.randint(1, 72)) if rng.random() < 0.6 else None,
                              created))
        with cur.copy("COPY audit_log (actor_id, action, entity, entity_id, details, created_at) FROM STDIN") as cp:
            for _ in range(n["audit_log"]):
                action = rng.choice(ACTIONS)
                cp.write_row((rng.randint(1, n["users"]), action, action.split("_")[-1], rng.randint(1, 10000),
                              json.dumps({"ip": f"203.0.113.{rng.randint(1, 254)}"}),
                              now - timedelta(minutes=rng.randint(1, 400 * 1440))))
    # some churn, so VACUUM has dead tuples to remove
    conn.execute("UPDATE bookings SET status = 'completed' WHERE id % 7 = 0 AND status = 'confirmed'")
    conn.execute("DELETE FROM notifications WHERE id % 11 = 0")
    conn.execute("ANALYZE")
    counts = {}
    for table in DEFAULT_SIZES:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
        counts[table] = int(row[0])
    return counts
