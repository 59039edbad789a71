-- API tokens may expire (`token issue --expires 90d`), and record when they were last
-- used (at most every few minutes; see auth::Authenticator).
ALTER TABLE api_tokens ADD COLUMN expires_at {int};
ALTER TABLE api_tokens ADD COLUMN last_used_at {int};
CREATE INDEX api_tokens_focal_point ON api_tokens (focal_point);
-- Sessions signed out (or ended by a new password) are marked, not deleted at once, so
-- that every replica's stream watch sees them end (auth/ended.rs); purged a day later.
ALTER TABLE sessions ADD COLUMN ended_at {int};
