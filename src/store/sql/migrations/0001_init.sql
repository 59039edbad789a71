-- focalpoint schema, version 1, for both backends. Times are milliseconds since the epoch
-- (UTC) as 64-bit integers, so both backends hash and compare the same numbers; ids are the UUID's
-- text. The words in braces stand for what each dialect spells its own way (see
-- store/sql/schema.rs).

CREATE TABLE incidents (
    id                 TEXT PRIMARY KEY,
    ref                TEXT NOT NULL,
    originator_party   TEXT NOT NULL,
    originator_officer TEXT NOT NULL,
    field              TEXT NOT NULL,
    severity           TEXT NOT NULL,
    severity_rank      {int} NOT NULL,
    tlp                TEXT NOT NULL,
    status             TEXT NOT NULL,
    state              TEXT NOT NULL,
    dedup_key          TEXT,
    content            TEXT NOT NULL,      -- JSON of domain::incident::Content
    raised_seq         {int} NOT NULL,
    raised_at          {int} NOT NULL,
    updated_at         {int} NOT NULL,
    closed_at          {int}
);
-- A ref and a dedup key are reserved only while the incident is active.
CREATE UNIQUE INDEX incidents_active_ref ON incidents (ref) WHERE state IN ('open', 'acknowledged');
CREATE UNIQUE INDEX incidents_active_dedup ON incidents (originator_party, dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('open', 'acknowledged');
CREATE INDEX incidents_raised ON incidents (raised_seq);

CREATE TABLE incident_parties (
    incident_id     TEXT NOT NULL,
    party           TEXT NOT NULL,
    position        {int} NOT NULL,
    acknowledged_by TEXT,
    acknowledged_at {int},
    via             TEXT,
    esc_step        {int},
    esc_loop        {int},
    esc_next_at     {int},
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
    id          {serial},
    incident_id TEXT NOT NULL,
    by_id       TEXT NOT NULL,
    party       TEXT NOT NULL,
    at          {int} NOT NULL,
    text        TEXT NOT NULL
);
CREATE INDEX notes_incident ON notes (incident_id, id);

-- The append-only, hash-chained event log. `seq` is assigned by the store as head + 1
-- under the single writer (SQLite) or the append lock (PostgreSQL), never by a sequence:
-- it stays contiguous and in commit order.
CREATE TABLE events (
    seq         {int} PRIMARY KEY,
    at          {int} NOT NULL,
    type        TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    party       TEXT,
    only_for    TEXT,
    data        TEXT NOT NULL,             -- canonical JSON, hashed verbatim
    hash        {blob} NOT NULL
);
CREATE INDEX events_incident ON events (incident_id, seq);
{append_only:events}

CREATE TABLE idempotency_keys (
    principal   TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    incident_id TEXT NOT NULL,
    created_at  {int} NOT NULL,
    PRIMARY KEY (principal, key)
);

-- Escalation: one row per (incident, party, step, loop) that is due to fire.
CREATE TABLE escalation_timers (
    incident_id TEXT NOT NULL,
    party       TEXT NOT NULL,
    step        {int} NOT NULL,
    loop        {int} NOT NULL,
    due_at      {int} NOT NULL,
    state       TEXT NOT NULL,             -- pending | fired | cancelled
    lease_owner TEXT,
    lease_until {int},
    fired_at    {int},
    PRIMARY KEY (incident_id, party, step, loop)
);
CREATE INDEX escalation_timers_due ON escalation_timers (due_at) WHERE state = 'pending';

-- Transactional outbox: one row per (incident, recipient, channel, party, step, loop).
CREATE TABLE outbox (
    id              {serial},
    incident_id     TEXT NOT NULL,
    party           TEXT NOT NULL,
    focal_point     TEXT NOT NULL,
    channel         TEXT NOT NULL,
    step            {int} NOT NULL,
    loop            {int} NOT NULL,
    state           TEXT NOT NULL,         -- pending | sending | sent | delivered | failed | cancelled
    attempts        {int} NOT NULL DEFAULT 0,
    next_attempt_at {int} NOT NULL,
    lease_owner     TEXT,
    lease_until     {int},
    provider_id     TEXT,
    last_error      TEXT,
    created_at      {int} NOT NULL,
    updated_at      {int} NOT NULL,
    UNIQUE (incident_id, focal_point, channel, party, step, loop)
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE state = 'pending';
CREATE INDEX outbox_incident ON outbox (incident_id, id);

CREATE TABLE api_tokens (
    hash        {blob} PRIMARY KEY,          -- SHA-256 of the 128-bit token
    focal_point TEXT NOT NULL,
    label       TEXT NOT NULL,
    created_at  {int} NOT NULL,
    revoked_at  {int}
);
CREATE TABLE passwords (
    focal_point TEXT PRIMARY KEY,
    phc         TEXT NOT NULL,             -- argon2id PHC string
    updated_at  {int} NOT NULL
);
CREATE TABLE sessions (
    hash        {blob} PRIMARY KEY,          -- SHA-256 of the session id in the cookie
    focal_point TEXT NOT NULL,
    created_at  {int} NOT NULL,
    expires_at  {int} NOT NULL
);
