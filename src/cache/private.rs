//! Private packages: what was uploaded to each project, and the names it claims.
//!
//! A name with a private upload in a project is *claimed* there: its page lists only the
//! private files and Larder never asks the upstream for it again, also after its files are
//! deleted (the record stays, as a tombstone; DC-1). Records live in the store
//! (`private/<project>/<name>`) and all of them are held in memory, so a read never touches
//! the disk; a page is rendered on its first read (uploads alone render nothing: the 1,000-client
//! load made thousands of records that were never read, and their renderings were most of it).
//! Writes are serialized by one lock: uploads are rare, correctness is not.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use crate::cache::records::{PrivateFile, PrivateRecord, RecordKey};
use crate::index::RenderedPage;
use crate::index::{ProjectName, Yanked};
use crate::store::{Records, Store};

struct Entry {
    record: PrivateRecord,
    rendered: std::sync::OnceLock<Arc<RenderedPage>>,
}

impl Entry {
    fn rendered(&self, name: &ProjectName) -> Arc<RenderedPage> {
        self.rendered
            .get_or_init(|| Arc::new(RenderedPage::new(self.record.to_page(name), self.record.changed_unix)))
            .clone()
    }
}

#[derive(Default)]
struct Index {
    /// project id → name → entry
    projects: HashMap<String, BTreeMap<ProjectName, Arc<Entry>>>,
    /// sha256 of every private file and metadata file → the projects holding it, with how many
    /// of their files use it.
    owners: HashMap<String, HashMap<String, usize>>,
}

fn blobs_of(record: &PrivateRecord) -> impl Iterator<Item = &String> {
    record.files.iter().flat_map(|f| std::iter::once(&f.sha256).chain(f.metadata_sha256.as_ref()))
}

impl Index {
    /// Replaces one record; the owners change by that record alone (rebuilding them for every
    /// upload made uploads quadratic and held the index lock: found by the 1,000-client load).
    fn insert(&mut self, project: &str, name: ProjectName, record: PrivateRecord) {
        for sha in blobs_of(&record) {
            *self.owners.entry(sha.clone()).or_default().entry(project.to_string()).or_default() += 1;
        }
        let old = self
            .projects
            .entry(project.to_string())
            .or_default()
            .insert(name, Arc::new(Entry { record, rendered: Default::default() }));
        for sha in old.iter().flat_map(|e| blobs_of(&e.record)) {
            if let Some(projects) = self.owners.get_mut(sha) {
                if let Some(n) = projects.get_mut(project) {
                    *n -= 1;
                    if *n == 0 {
                        projects.remove(project);
                    }
                }
                if projects.is_empty() {
                    self.owners.remove(sha);
                }
            }
        }
    }
}

/// Who may see a stored blob.
pub enum Visibility {
    /// Not a private file: an upstream file anyone may fetch.
    Public,
    /// A private file of one of the scope's projects.
    InScope,
    /// A private file of other projects only: not found from here.
    Hidden,
}

/// The outcome of adding a file.
pub enum Added {
    New,
    /// The identical file was already there (UPL-08: 200, so retries are harmless).
    Identical,
}

#[derive(Debug, thiserror::Error)]
pub enum Rejected {
    /// A different file under an existing filename (UPL-08).
    #[error("File already exists ('{filename}', with sha256 hash '{sha256}').")]
    Exists { filename: String, sha256: String },
    #[error(
        "This filename was previously used by a file that has since been deleted; use a different version ('{0}')."
    )]
    Reused(String),
    #[error("no private file `{0}` in this project")]
    NoSuchFile(String),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

pub struct Private {
    store: Arc<dyn Store>,
    index: RwLock<Index>,
    write_lock: tokio::sync::Mutex<()>,
}

fn record_key(project: &str, name: &ProjectName) -> String {
    RecordKey::Private { project: project.to_string(), name: name.clone() }.to_string()
}

impl Private {
    /// Loads every private record from the store. A record that is not valid is reported and
    /// skipped, never fatal; its name stays claimed, with no files (fail closed: a damaged
    /// record must not hand the name to the upstream, DC-1).
    pub async fn load(store: Arc<dyn Store>, records: &Records) -> anyhow::Result<Private> {
        let mut index = Index::default();
        for key in records.with_prefix(crate::cache::records::PRIVATE_PREFIX) {
            let Ok(RecordKey::Private { project, name }) = RecordKey::parse(key) else {
                tracing::error!(key = %key.escape_debug(), "skipping a private record with an invalid key");
                metrics::counter!("larder_bad_records_total").increment(1);
                continue;
            };
            let record = match store.get_record(key).await {
                Ok(Some(bytes)) => crate::cache::records::decode_private(&name, &bytes),
                Ok(None) => continue,
                Err(e) => Err(e.to_string()),
            };
            let record = record.unwrap_or_else(|reason| {
                tracing::error!(%key, %reason, "private record is damaged; its name stays private with no files (re-upload, or import a good copy)");
                metrics::counter!("larder_bad_records_total").increment(1);
                PrivateRecord::default()
            });
            index.insert(&project, name, record);
        }
        Ok(Private { store, index: RwLock::new(index), write_lock: tokio::sync::Mutex::new(()) })
    }

    /// Is `name` claimed by any of `projects`?
    pub fn is_claimed(&self, projects: &[String], name: &ProjectName) -> bool {
        let index = self.index.read().expect("private index lock");
        projects.iter().any(|p| index.projects.get(p).is_some_and(|names| names.contains_key(name)))
    }

    /// The page for a claimed name: one project's files, or the union over a group's projects.
    pub fn page(&self, projects: &[String], name: &ProjectName) -> Option<Arc<RenderedPage>> {
        let index = self.index.read().expect("private index lock");
        let entries: Vec<&Arc<Entry>> = projects.iter().filter_map(|p| index.projects.get(p)?.get(name)).collect();
        match entries.as_slice() {
            [] => None,
            [one] => Some(one.rendered(name)),
            many => {
                let mut record = PrivateRecord::default();
                for e in many {
                    record.files.extend(e.record.files.iter().cloned());
                    record.changed_unix = record.changed_unix.max(e.record.changed_unix);
                }
                Some(Arc::new(RenderedPage::new(record.to_page(name), record.changed_unix)))
            }
        }
    }

    /// The claimed name (and its page) that distribution `filename` belongs to in `projects`,
    /// trying the names the filename can belong to (FN-5).
    pub fn claimed_by_file(&self, projects: &[String], filename: &str) -> Option<(ProjectName, Arc<RenderedPage>)> {
        crate::index::filename::candidate_projects(filename)
            .iter()
            .filter_map(|n| ProjectName::parse(n).ok())
            .find_map(|n| self.page(projects, &n).map(|page| (n, page)))
    }

    /// Every name claimed by `projects`.
    pub fn names(&self, projects: &[String]) -> BTreeSet<ProjectName> {
        let index = self.index.read().expect("private index lock");
        projects.iter().filter_map(|p| index.projects.get(p)).flat_map(|names| names.keys().cloned()).collect()
    }

    /// Every blob a private file uses (files and their metadata).
    pub fn blobs(&self) -> Vec<String> {
        self.index.read().expect("private index lock").owners.keys().cloned().collect()
    }

    /// Is this blob a private file (or its metadata) of any project?
    pub fn is_private(&self, sha256: &str) -> bool {
        self.index.read().expect("private index lock").owners.contains_key(sha256)
    }

    pub fn visibility(&self, sha256: &str, projects: &[String]) -> Visibility {
        let index = self.index.read().expect("private index lock");
        match index.owners.get(sha256) {
            None => Visibility::Public,
            Some(owners) if projects.iter().any(|p| owners.contains_key(p)) => Visibility::InScope,
            Some(_) => Visibility::Hidden,
        }
    }

    /// Adds an uploaded file. Under the lock, the file is checked first (`Exists`, `Reused`,
    /// `Identical`); only an accepted file's bytes are stored, by `store_blobs`, which returns
    /// the blobs it created. If the record cannot be written, those blobs are removed again:
    /// a refused upload leaves nothing in the store (issue 9).
    pub async fn add<F, Fut>(
        &self,
        project: &str,
        name: &ProjectName,
        file: PrivateFile,
        store_blobs: F,
    ) -> Result<Added, Rejected>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<String>, crate::store::Error>>,
    {
        let _guard = self.write_lock.lock().await;
        let mut record = self.record(project, name);
        if let Some(existing) = record.files.iter().find(|f| f.filename == file.filename) {
            return if existing.sha256 == file.sha256 {
                Ok(Added::Identical)
            } else {
                Err(Rejected::Exists { filename: file.filename, sha256: existing.sha256.clone() })
            };
        }
        if record.deleted.contains(&file.filename) {
            return Err(Rejected::Reused(file.filename));
        }
        let created = store_blobs().await?;
        record.files.push(file);
        if let Err(e) = self.save(project, name, record).await {
            for sha in created {
                let _ = self.store.delete_blob(&sha).await;
            }
            return Err(e);
        }
        Ok(Added::New)
    }

    /// Sets or clears a file's yank (PEP 592).
    pub async fn set_yanked(
        &self,
        project: &str,
        name: &ProjectName,
        filename: &str,
        yanked: Yanked,
    ) -> Result<(), Rejected> {
        let _guard = self.write_lock.lock().await;
        let mut record = self.record(project, name);
        let i = record.position(filename).ok_or_else(|| Rejected::NoSuchFile(filename.into()))?;
        record.files[i].yanked = yanked;
        self.save(project, name, record).await
    }

    /// Deletes a file; the name stays claimed. Returns the sha256s no private file uses any
    /// more, with the lock still held: the caller removes them from the store (unless
    /// something else still references them) before any upload can reference them again.
    pub async fn delete(
        &self,
        project: &str,
        name: &ProjectName,
        filename: &str,
    ) -> Result<(Vec<String>, tokio::sync::MutexGuard<'_, ()>), Rejected> {
        let guard = self.write_lock.lock().await;
        let mut record = self.record(project, name);
        let file = record.files.remove(record.position(filename).ok_or_else(|| Rejected::NoSuchFile(filename.into()))?);
        record.deleted.push(file.filename.clone());
        self.save(project, name, record).await?;
        let index = self.index.read().expect("private index lock");
        let unused = std::iter::once(file.sha256)
            .chain(file.metadata_sha256)
            .filter(|sha| !index.owners.contains_key(sha))
            .collect();
        Ok((unused, guard))
    }

    fn record(&self, project: &str, name: &ProjectName) -> PrivateRecord {
        let index = self.index.read().expect("private index lock");
        index.projects.get(project).and_then(|n| n.get(name)).map(|e| e.record.clone()).unwrap_or_default()
    }

    /// Persists first, then publishes: a failed write leaves nothing visible.
    async fn save(&self, project: &str, name: &ProjectName, mut record: PrivateRecord) -> Result<(), Rejected> {
        // Last-Modified of its page (HDR-1): uploads, yanks and deletes all change it.
        record.changed_unix = crate::clock::Clock::system().unix();
        let bytes = serde_json::to_vec(&record).expect("a private record serializes");
        self.store.put_record(&record_key(project, name), bytes).await?;
        self.index.write().expect("private index lock").insert(project, name.clone(), record);
        Ok(())
    }
}
