-- focalpoint SQLite schema, version 1. Times are milliseconds since the epoch (UTC).

CREATE TABLE incidents (
    id                 TEXT PRIMARY KEY,
    ref                TEXT NOT NULL,
    originator_party   TEXT NOT NULL,
    originator_officer TEXT NOT NULL,
    field              TEXT NOT NULL,
    severity           TEXT NOT NULL,
    severity_rank      INTEGER NOT NULL,
    tlp                TEXT NOT NULL,
    status             TEXT NOT NULL,
    state              TEXT NOT NULL,
    dedup_key          TEXT,
    content            TEXT NOT NULL,      -- JSON of domain::incident::Content
    raised_seq         INTEGER NOT NULL,
    raised_at          INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL,
    closed_at          INTEGER
);
-- A ref and a dedup key are reserved only while the incident is active.
CREATE UNIQUE INDEX incidents_active_ref ON incidents (ref) WHERE state IN ('open', 'acknowledged');
CREATE UNIQUE INDEX incidents_active_dedup ON incidents (originator_party, dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('open', 'acknowledged');
CREATE INDEX incidents_raised ON incidents (raised_seq);

CREATE TABLE incident_parties (
    incident_id     TEXT NOT NULL,
    party           TEXT NOT NULL,
    position        INTEGER NOT NULL,
    acknowledged_by TEXT,
    acknowledged_at INTEGER,
    via             TEXT,
    esc_step        INTEGER,
    esc_loop        INTEGER,
    esc_next_at     INTEGER,
    esc_state       TEXT,
    PRIMARY KEY (incident_id, party)
);
CREATE INDEX incident_parties_party ON incident_parties (party, incident_id);

-- Visibility keys (domain::visibility): who may see the incident.
CREATE TABLE incident_audience (
    incident_id TEXT NOT NULL,
    key         TEXT NOT NULL,
    PRIMARY KEY (incident_id, key)
);
CREATE INDEX incident_audience_key ON incident_audience (key, incident_id);

CREATE TABLE notes (
    id          INTEGER PRIMARY KEY,
    incident_id TEXT NOT NULL,
    by_id       TEXT NOT NULL,
    party       TEXT NOT NULL,
    at          INTEGER NOT NULL,
    text        TEXT NOT NULL
);
CREATE INDEX notes_incident ON notes (incident_id, id);

-- The append-only, hash-chained event log.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    type        TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    party       TEXT,
    only_for    TEXT,
    data        TEXT NOT NULL,             -- canonical JSON, hashed verbatim
    hash        BLOB NOT NULL
);
CREATE INDEX events_incident ON events (incident_id, seq);
CREATE TRIGGER events_no_update BEFORE UPDATE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER events_no_delete BEFORE DELETE ON events
    BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE idempotency_keys (
    principal   TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (principal, key)
);

-- Escalation: one row per (incident, party, step, loop) that is due to fire.
CREATE TABLE escalation_timers (
    incident_id TEXT NOT NULL,
    party       TEXT NOT NULL,
    step        INTEGER NOT NULL,
    loop        INTEGER NOT NULL,
    due_at      INTEGER NOT NULL,
    state       TEXT NOT NULL,             -- pending | fired | cancelled
    lease_owner TEXT,
    lease_until INTEGER,
    fired_at    INTEGER,
    PRIMARY KEY (incident_id, party, step, loop)
);
CREATE INDEX escalation_timers_due ON escalation_timers (due_at) WHERE state = 'pending';

-- Transactional outbox: one row per (incident, recipient, channel, party, step, loop).
CREATE TABLE outbox (
    id              INTEGER PRIMARY KEY,
    incident_id     TEXT NOT NULL,
    party           TEXT NOT NULL,
    focal_point     TEXT NOT NULL,
    channel         TEXT NOT NULL,
    step            INTEGER NOT NULL,
    loop            INTEGER NOT NULL,
    state           TEXT NOT NULL,         -- pending | sending | sent | delivered | failed | cancelled
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    provider_id     TEXT,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    UNIQUE (incident_id, focal_point, channel, party, step, loop)
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';

CREATE TABLE api_tokens (
    hash        BLOB PRIMARY KEY,          -- SHA-256 of the 128-bit token
    focal_point TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
CREATE TABLE passwords (
    focal_point TEXT PRIMARY KEY,
    phc         TEXT NOT NULL,             -- argon2id PHC string
    updated_at  INTEGER NOT NULL
);
CREATE TABLE sessions (
    hash        BLOB PRIMARY KEY,          -- SHA-256 of the session id in the cookie
    focal_point TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
