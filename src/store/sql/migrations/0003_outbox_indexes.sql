-- Both indexes repeat a prefix of the outbox's UNIQUE (incident_id, focal_point, channel,
-- party, step, loop), which already serves every lookup by incident and by recipient
-- (an incident has a handful of pages, so ordering them by id costs nothing). Each cost
-- an index write per page raised.
DROP INDEX outbox_incident;
DROP INDEX outbox_incident_recipient;
