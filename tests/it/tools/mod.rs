//! Live Retell tool calls (`POST /webhooks/retell/{company_id}/functions/{tool}`) and the fake
//! Cal.com's slots and holds they rely on.
mod calcom_slots;
mod live;
