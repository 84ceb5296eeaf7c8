"""Real problems for the demo's PostgreSQL jobs to find: nothing is faked, everything is made the way
production databases get into trouble (churn without autovacuum, a forgotten index, an interrupted
REINDEX, a counter running out, slow searches).  Small, so the demo stays quick.
"""

from __future__ import annotations

from typing import Any

STAGE_SQL = """
-- a hot table whose autovacuum was switched off: every update leaves a dead version behind
CREATE TABLE user_sessions (
    id bigserial PRIMARY KEY, user_id bigint NOT NULL, token text NOT NULL, seen_at timestamptz NOT NULL
) WITH (autovacuum_enabled = false);
INSERT INTO user_sessions (user_id, token, seen_at)
SELECT g % 2000 + 1, md5(g::text) || md5((g * 7)::text), now() FROM generate_series(1, 6000) g;
UPDATE user_sessions SET seen_at = now();
UPDATE user_sessions SET seen_at = now();
UPDATE user_sessions SET seen_at = now();
-- indexes someone added twice: an exact duplicate and a prefix of an existing (listing_id, check_in) index
CREATE INDEX bookings_guest_dup ON bookings (guest_id);
CREATE INDEX bookings_listing_only ON bookings (listing_id);
-- an invoice counter close to the end of its range
CREATE SEQUENCE invoice_number MAXVALUE 99999;
SELECT setval('invoice_number', 91000);
-- coupon codes, unique after normalization
CREATE FUNCTION normalize_code(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper($1)';
CREATE TABLE coupons (id serial PRIMARY KEY, code text NOT NULL);
INSERT INTO coupons (code) SELECT 'spring' || g FROM generate_series(1, 300) g;
CREATE UNIQUE INDEX coupons_code_key ON coupons (normalize_code(code));
"""

#: a deploy briefly shipped a wrong normalize_code(): the nightly REINDEX CONCURRENTLY failed half-way
#: (leaving coupons_code_key_ccnew behind); the function was fixed again afterwards
INTERRUPTED_REINDEX = (
    "CREATE OR REPLACE FUNCTION normalize_code(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT left($1, 3)'",
    "REINDEX INDEX CONCURRENTLY coupons_code_key",
    "CREATE OR REPLACE FUNCTION normalize_code(text) RETURNS text LANGUAGE sql IMMUTABLE AS 'SELECT upper($1)'",
)

#: what the app runs too often: a substring search no index can serve
SLOW_SEARCH_SQL = """
SELECT l.city, count(*) FROM messages m JOIN bookings b ON b.id = m.booking_id JOIN listings l ON l.id = b.listing_id
WHERE m.body ILIKE %(q)s GROUP BY l.city ORDER BY 2 DESC LIMIT 5
"""


def stage_problems(conn: Any) -> dict[str, str]:
    """Create the problems in the (seeded) app database; returns what was staged, for the demo's facts."""
    import psycopg

    conn.execute(STAGE_SQL)
    conn.execute("ANALYZE")
    conn.execute(INTERRUPTED_REINDEX[0])
    try:
        conn.execute(INTERRUPTED_REINDEX[1])
    except psycopg.errors.UniqueViolation:
        pass  # expected: this is the interruption
    conn.execute(INTERRUPTED_REINDEX[2])
    for word in ("keys", "late", "balcony", "parking", "noisy", "wifi") * 5:
        conn.execute(SLOW_SEARCH_SQL, {"q": f"%{word}%"})
    return {
        "bloated table": "user_sessions (autovacuum off, 3 full updates)",
        "duplicate indexes": "bookings_guest_dup, bookings_listing_only",
        "sequence near its end": "invoice_number at 91 %",
        "interrupted REINDEX": "coupons_code_key_ccnew",
        "slow statement": "messages ILIKE search, 30 calls",
    }
