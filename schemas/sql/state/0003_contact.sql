-- Anonymous callers: the branch's fallback attendee email (used when a caller leaves no phone
-- or email) and where an appointment's attendee contact came from (`caller`, `call_data`,
-- `branch_fallback`; NULL for bookings made in Cal.com and for rows older than this column).
ALTER TABLE branches ADD COLUMN fallback_email TEXT;
ALTER TABLE appointments ADD COLUMN contact_source TEXT;
