-- API tokens may expire (`token issue --expires 90d`), and record when they were last
-- used (at most every few minutes; see auth::Authenticator).
ALTER TABLE api_tokens ADD COLUMN expires_at {int};
ALTER TABLE api_tokens ADD COLUMN last_used_at {int};
CREATE INDEX api_tokens_focal_point ON api_tokens (focal_point);
