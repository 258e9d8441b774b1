-- Tenants told of reveals (opt-in): 'off', 'category' (when, which role, the reason's
-- category) or 'reason' (also the reason as written). The category is chosen with each reveal
-- and kept with its window or its four-eyes request.
ALTER TABLE tenants ADD COLUMN reveal_notice TEXT NOT NULL DEFAULT 'off';
ALTER TABLE reveal_grants ADD COLUMN category TEXT NOT NULL DEFAULT 'other';
ALTER TABLE reveal_requests ADD COLUMN category TEXT NOT NULL DEFAULT 'other';
