-- Where a dedup key holds: '' for the whole originator party, or one raiser's id when
-- not every raiser of the party may see the incident (a red one, say). A colleague
-- reusing the key then raises their own incident instead of learning of a hidden one.
ALTER TABLE incidents ADD COLUMN dedup_scope TEXT NOT NULL DEFAULT '';
DROP INDEX incidents_active_dedup;
CREATE UNIQUE INDEX incidents_active_dedup ON incidents (originator_party, dedup_scope, dedup_key)
    WHERE dedup_key IS NOT NULL AND state IN ('open', 'acknowledged');
