-- The Retell LLM `askpro agent provision` made for a branch (its agent is retell_agent_id),
-- so a run that stopped between creating the LLM and the agent reuses the LLM.
ALTER TABLE branches ADD COLUMN retell_llm_id TEXT;
