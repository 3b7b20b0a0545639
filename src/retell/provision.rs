//! `askpro agent provision|show|deprovision`: bring a branch's Retell LLM, agent and phone
//! binding to what [`super::spec`] describes, idempotently.
//!
//! Each object is found by the id stored on the branch, else by listing at Retell (the agent
//! by the branch id in its name, the LLM by its branch tag), and only created when neither
//! finds it. It is updated only when Retell does not already hold what we want, so a second
//! run writes nothing. The LLM id is stored before the agent is created, and the agent id
//! before the number is bound, so a run that stops half way is finished by the next one
//! without a second LLM or agent.

use std::collections::BTreeMap;

use askpro_actors::catalog::{DefaultService, Service};
use askpro_actors::domain::Branch;
use askpro_actors::error::StoreError;
use askpro_actors::StateStore;
use serde::Serialize;
use serde_json::Value;

use super::client::{RetellClient, RetellError};
use super::spec::{self, Urls};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Retell(#[from] RetellError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("retell answered {operation} without {field}")]
    MissingId {
        operation: &'static str,
        field: &'static str,
    },
    #[error(
        "the branch's number {number} is not in this Retell account; buy or import it at \
         Retell, then run `askpro agent provision` again (the agent {agent_id} is kept)"
    )]
    UnknownNumber { number: String, agent_id: String },
    #[error("branch {0} no longer exists")]
    BranchGone(askpro_actors::BranchId),
}

/// What a run did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Updated,
    Unchanged,
    Deleted,
    Absent,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub id: String,
    pub action: Action,
}

#[derive(Debug, Serialize)]
pub struct ServiceStep {
    pub id: uuid::Uuid,
    pub name: String,
    pub created: bool,
    pub staff_assigned: usize,
}

#[derive(Debug, Serialize)]
pub struct Provisioned {
    pub company_id: askpro_actors::CompanyId,
    pub branch_id: askpro_actors::BranchId,
    pub service: ServiceStep,
    pub llm: Step,
    pub agent: Step,
    pub phone: Step,
    pub webhook_url: String,
    pub inbound_webhook_url: String,
    pub tool_urls: BTreeMap<&'static str, String>,
}

/// Everything a run needs.
pub struct Provisioner<'a> {
    pub client: &'a RetellClient,
    pub store: &'a dyn StateStore,
    pub urls: Urls,
    pub voice_id: Option<String>,
    /// Prints one progress line (stderr in the CLI).
    pub progress: &'a (dyn Fn(String) + Sync),
}

type Out<T> = Result<T, ProvisionError>;

impl Provisioner<'_> {
    pub async fn provision(&self, branch: &Branch, company_name: &str) -> Out<Provisioned> {
        let service = self.ensure_service(branch).await?;
        let llm = self.ensure_llm(branch, company_name).await?;
        let branch = self
            .remember(branch, |b| b.retell_llm_id = Some(llm.id.clone()))
            .await?;
        let agent = self.ensure_agent(&branch, &llm.id).await?;
        let branch = self
            .remember(&branch, |b| b.retell_agent_id = Some(agent.id.clone()))
            .await?;
        let phone = self.bind_phone(&branch, &agent.id).await?;
        Ok(Provisioned {
            company_id: branch.company_id,
            branch_id: branch.id,
            service,
            llm,
            agent,
            phone,
            webhook_url: self.urls.webhook(&branch),
            inbound_webhook_url: self.urls.inbound(),
            tool_urls: spec::TOOLS
                .iter()
                .map(|t| (*t, self.urls.tool(&branch, t)))
                .collect(),
        })
    }

    /// The branch's first service, or the default one created now (atomically, once).
    async fn ensure_service(&self, branch: &Branch) -> Out<ServiceStep> {
        let now = chrono::Utc::now();
        let candidate = askpro_actors::catalog::default_service(
            branch,
            "askpro agent provision needed a service and the branch had none",
            now,
        );
        let ensured = self
            .store
            .ensure_default_service(branch, &candidate)
            .await?;
        let (service, created, staff_assigned): (&Service, bool, usize) = match &ensured {
            DefaultService::Existing(service) => (service, false, 0),
            DefaultService::Created {
                service,
                assignments,
            } => (service, true, assignments.len()),
        };
        if created {
            (self.progress)(format!(
                "created default service {} ({})",
                service.name, service.id
            ));
        } else {
            (self.progress)(format!("service {} ({}) exists", service.name, service.id));
        }
        Ok(ServiceStep {
            id: service.id,
            name: service.name.clone(),
            created,
            staff_assigned,
        })
    }

    async fn ensure_llm(&self, branch: &Branch, company_name: &str) -> Out<Step> {
        let desired = spec::llm(branch, &self.urls, company_name);
        let step = match self.find_llm(branch).await? {
            Some(current) => {
                let id = id_of(&current, "get-retell-llm", "llm_id")?;
                self.converge("llm", &id, &current, &desired, |id, body| async move {
                    self.client.update_llm(&id, &body).await
                })
                .await?
            }
            None => {
                let created = self.client.create_llm(&desired).await?;
                Step {
                    id: id_of(&created, "create-retell-llm", "llm_id")?,
                    action: Action::Created,
                }
            }
        };
        self.report("llm", &step);
        Ok(step)
    }

    async fn find_llm(&self, branch: &Branch) -> Out<Option<Value>> {
        if let Some(id) = &branch.retell_llm_id {
            if let Some(llm) = self.client.get_llm(id).await? {
                return Ok(Some(llm));
            }
        }
        if let Some(agent) = self.find_agent(branch).await? {
            let llm_id = agent
                .pointer("/response_engine/llm_id")
                .and_then(Value::as_str);
            if let Some(llm) = match llm_id {
                Some(id) => self.client.get_llm(id).await?,
                None => None,
            } {
                return Ok(Some(llm));
            }
        }
        let tag = format!("/default_dynamic_variables/{}", spec::BRANCH_TAG);
        let mine = branch.id.to_string();
        Ok(self
            .client
            .list_llms()
            .await?
            .into_iter()
            .find(|llm| llm.pointer(&tag).and_then(Value::as_str) == Some(mine.as_str())))
    }

    async fn ensure_agent(&self, branch: &Branch, llm_id: &str) -> Out<Step> {
        let step = match self.find_agent(branch).await? {
            Some(current) => {
                let id = id_of(&current, "get-agent", "agent_id")?;
                let desired = spec::agent(branch, &self.urls, llm_id, self.voice_id.as_deref());
                self.converge("agent", &id, &current, &desired, |id, body| async move {
                    self.client.update_agent(&id, &body).await
                })
                .await?
            }
            None => {
                let voice = self.voice_id.as_deref().unwrap_or(spec::DEFAULT_VOICE_ID);
                let desired = spec::agent(branch, &self.urls, llm_id, Some(voice));
                let created = self.client.create_agent(&desired).await?;
                Step {
                    id: id_of(&created, "create-agent", "agent_id")?,
                    action: Action::Created,
                }
            }
        };
        self.report("agent", &step);
        Ok(step)
    }

    /// By the stored id, else the agent whose name carries the branch id.
    pub async fn find_agent(&self, branch: &Branch) -> Out<Option<Value>> {
        if let Some(id) = &branch.retell_agent_id {
            if let Some(agent) = self.client.get_agent(id).await? {
                return Ok(Some(agent));
            }
        }
        let mine = branch.id.to_string();
        Ok(self.client.list_agents().await?.into_iter().find(|agent| {
            agent
                .get("agent_name")
                .and_then(Value::as_str)
                .is_some_and(|name| name.contains(&mine))
        }))
    }

    async fn bind_phone(&self, branch: &Branch, agent_id: &str) -> Out<Step> {
        let Some(current) = self.client.get_phone(&branch.phone).await? else {
            return Err(ProvisionError::UnknownNumber {
                number: branch.phone.clone(),
                agent_id: agent_id.to_owned(),
            });
        };
        let desired = spec::phone(&self.urls, agent_id);
        let step = self
            .converge(
                "phone",
                &branch.phone,
                &current,
                &desired,
                |number, body| async move { self.client.update_phone(&number, &body).await },
            )
            .await?;
        self.report("phone number", &step);
        Ok(step)
    }

    /// Sends `desired` only when `current` does not hold it already.
    async fn converge<F, Fut>(
        &self,
        _what: &str,
        id: &str,
        current: &Value,
        desired: &Value,
        update: F,
    ) -> Out<Step>
    where
        F: FnOnce(String, Value) -> Fut,
        Fut: std::future::Future<Output = Result<Value, RetellError>>,
    {
        if spec::holds(current, desired) {
            return Ok(Step {
                id: id.to_owned(),
                action: Action::Unchanged,
            });
        }
        update(id.to_owned(), desired.clone()).await?;
        Ok(Step {
            id: id.to_owned(),
            action: Action::Updated,
        })
    }

    fn report(&self, what: &str, step: &Step) {
        let action = serde_json::to_value(step.action)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        (self.progress)(format!("{what} {} {action}", step.id));
    }

    /// Stores a change of the branch (re-read first, so concurrent edits of other fields
    /// survive); a no-op when nothing changes.
    async fn remember(&self, branch: &Branch, change: impl FnOnce(&mut Branch)) -> Out<Branch> {
        let Some(mut fresh) = self.store.branch(branch.company_id, branch.id).await? else {
            return Err(ProvisionError::BranchGone(branch.id));
        };
        let before = fresh.clone();
        change(&mut fresh);
        if fresh != before {
            self.store.update_branch(&fresh).await?;
        }
        Ok(fresh)
    }

    /// Unbinds the number (when bound to the branch's agent), deletes the agent and the LLM,
    /// and forgets their ids on the branch.
    pub async fn deprovision(&self, branch: &Branch) -> Out<Vec<(&'static str, Step)>> {
        let agent = self.find_agent(branch).await?;
        let agent_id = match &agent {
            Some(agent) => Some(id_of(agent, "get-agent", "agent_id")?),
            None => None,
        };
        let mut steps = vec![(
            "phone",
            self.unbind_phone(branch, agent_id.as_deref()).await?,
        )];
        let agent_step = match &agent_id {
            Some(id) => Step {
                id: id.clone(),
                action: deleted(self.client.delete_agent(id).await?),
            },
            None => absent(),
        };
        self.report("agent", &agent_step);
        steps.push(("agent", agent_step));
        let llm_id = agent
            .as_ref()
            .and_then(|a| a.pointer("/response_engine/llm_id").and_then(Value::as_str))
            .map(str::to_owned)
            .or_else(|| branch.retell_llm_id.clone());
        let llm_step = match llm_id {
            Some(id) => Step {
                action: deleted(self.client.delete_llm(&id).await?),
                id,
            },
            None => absent(),
        };
        self.report("llm", &llm_step);
        steps.push(("llm", llm_step));
        self.remember(branch, |b| {
            b.retell_agent_id = None;
            b.retell_llm_id = None;
        })
        .await?;
        Ok(steps)
    }

    async fn unbind_phone(&self, branch: &Branch, agent_id: Option<&str>) -> Out<Step> {
        let current = self.client.get_phone(&branch.phone).await?;
        let bound = |phone: &Value| {
            phone["inbound_agents"]
                .as_array()
                .is_some_and(|agents| agents.iter().any(|a| a["agent_id"].as_str() == agent_id))
        };
        let step = match current {
            Some(phone) if agent_id.is_some() && bound(&phone) => {
                let body = serde_json::json!({"inbound_agents": [], "inbound_webhook_url": null});
                self.client.update_phone(&branch.phone, &body).await?;
                Step {
                    id: branch.phone.clone(),
                    action: Action::Updated,
                }
            }
            Some(_) => Step {
                id: branch.phone.clone(),
                action: Action::Unchanged,
            },
            None => absent(),
        };
        self.report("phone number", &step);
        Ok(step)
    }
}

fn deleted(existed: bool) -> Action {
    match existed {
        true => Action::Deleted,
        false => Action::Absent,
    }
}

fn absent() -> Step {
    Step {
        id: String::new(),
        action: Action::Absent,
    }
}

fn id_of(value: &Value, operation: &'static str, field: &'static str) -> Out<String> {
    value
        .get(field)
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or(ProvisionError::MissingId { operation, field })
}
