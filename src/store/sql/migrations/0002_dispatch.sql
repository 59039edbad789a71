-- focalpoint schema, version 2 (both backends): outbox dispatch, inbound acknowledgements.

-- Where a merged page points (the identical page that was sent instead), and the
-- provider's delivery status as last reported by a callback (queued < sent < delivered;
-- failed and undelivered are final).
ALTER TABLE outbox ADD COLUMN merged_into {int};
ALTER TABLE outbox ADD COLUMN provider_status TEXT;
CREATE INDEX outbox_provider ON outbox (provider_id) WHERE provider_id IS NOT NULL;
CREATE INDEX outbox_incident_recipient ON outbox (incident_id, focal_point, channel);

-- Email ack links: SHA-256 of the 128-bit token, bound to incident, recipient and party.
CREATE TABLE ack_tokens (
    hash        {blob} PRIMARY KEY,
    incident_id TEXT NOT NULL,
    focal_point TEXT NOT NULL,
    party       TEXT NOT NULL,
    outbox_id   {int} NOT NULL,
    created_at  {int} NOT NULL,
    used_at     {int}
);

-- Inbound SMS already processed, by MessageSid: a replay is ignored whatever its body.
CREATE TABLE inbound_messages (
    sid         TEXT PRIMARY KEY,
    received_at {int} NOT NULL
);

-- Secrets the hub generates for itself on first start (e.g. the webhook signing key).
CREATE TABLE instance_secrets (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at {int} NOT NULL
);
