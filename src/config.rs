//! Resolved configuration: command-line flags > environment > config file > built-in defaults.
//!
//! Environment: `RAG_HOME` (cache, default `~/.cache/rag`), `RAG_MODEL` (a GGUF path),
//! `RAG_EMBED_MODEL` (the GGUF that embeds chunks and queries), `RAG_EMBEDDER` (`llama` or
//! `minilm`), `RAG_THREADS`, `RAG_CONFIG` (a config file). The config file is `--config PATH`, else
//! `RAG_CONFIG`, else `./rag.toml`, else `$RAG_HOME/config.toml`, whichever exists first:
//!
//! ```toml
//! model = "/models/llama-2-7b-chat.Q4_K_M.gguf"
//! embed_model = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"   # what embeds chunks and queries
//! threads = 4
//! template = "llama2"   # or "chatml"; default: from the GGUF
//! context = 4096        # cap on the context window
//! ```
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::model::{
    default_threads, EmbedderKind, HiddenLayer, ModelOptions, Pooling, TemplateFamily,
};

/// File name of the default model inside `$RAG_HOME/models`.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Values given on the command line (or by a library user); `None` falls through.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub model: Option<PathBuf>,
    pub embed_model: Option<PathBuf>,
    pub embedder: Option<EmbedderKind>,
    pub threads: Option<usize>,
    pub template: Option<TemplateFamily>,
    pub context: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    model: Option<PathBuf>,
    embed_model: Option<PathBuf>,
    embedder: Option<String>,
    threads: Option<usize>,
    template: Option<String>,
    context: Option<usize>,
}

/// Everything resolved.
#[derive(Debug, Clone)]
pub struct Config {
    /// Cache directory (`$RAG_HOME`, default `~/.cache/rag`).
    pub home: PathBuf,
    /// The GGUF to use.
    pub model: PathBuf,
    /// Whether `model` is the built-in default (so a missing file means "fetch it").
    pub model_is_default: bool,
    /// The GGUF whose hidden states embed chunks and queries. Default: the default model
    /// (SmolLM2-135M), whatever the chat model is: embedding a corpus with a 7B model on a CPU
    /// takes hours, and the index must be queried with the model that built it.
    pub embed_model: PathBuf,
    /// Whether `embed_model` is the built-in default.
    pub embed_model_is_default: bool,
    /// Which embedder a new index uses (`llama` or `minilm`); `None`: the one the index was
    /// built with, or [`crate::model::DEFAULT_EMBEDDER`] (minilm) for a new index.
    pub embedder: Option<EmbedderKind>,
    /// Pooling of a new Llama-embedder index (`None`: the index's own, or mean).
    pub embed_pooling: Option<Pooling>,
    /// Hidden layer of a new Llama-embedder index (`None`: the index's own, or the final one).
    pub embed_layer: Option<HiddenLayer>,
    /// Compute threads (default: the number of cores).
    pub threads: usize,
    /// Chat template override.
    pub template: Option<TemplateFamily>,
    /// Context window cap.
    pub context: Option<usize>,
    /// The config file that was read, if any.
    pub file: Option<PathBuf>,
}

impl Config {
    /// Resolve from overrides, the environment and the config file.
    pub fn resolve(o: &Overrides) -> Result<Self> {
        Self::resolve_with(o, &|k| std::env::var_os(k))
    }

    /// [`Config::resolve`] with the environment given as a lookup function.
    pub fn resolve_with(o: &Overrides, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Self> {
        let env_path = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
        let home = rag_home_with(env);
        let file_path = o
            .config
            .clone()
            .or_else(|| env_path("RAG_CONFIG"))
            .or_else(|| Some(PathBuf::from("rag.toml")).filter(|p| p.exists()))
            .or_else(|| Some(home.join("config.toml")).filter(|p| p.exists()));
        let file = match &file_path {
            Some(p) => read_file_config(p)?,
            None => FileConfig::default(),
        };
        let bad = |detail: String| Error::Config {
            path: file_path.clone().unwrap_or_default(),
            detail,
        };
        let file_template = file
            .template
            .as_deref()
            .map(str::parse::<TemplateFamily>)
            .transpose()
            .map_err(bad)?;
        let env_threads = match env("RAG_THREADS").map(|s| s.to_string_lossy().into_owned()) {
            Some(s) if !s.is_empty() => Some(s.parse::<usize>().map_err(|_| {
                Error::InvalidOption(format!("RAG_THREADS={s} is not a whole number"))
            })?),
            _ => None,
        };
        let (model, model_is_default) = match o
            .model
            .clone()
            .or_else(|| env_path("RAG_MODEL"))
            .or(file.model)
        {
            Some(m) => (m, false),
            None => (home.join("models").join(DEFAULT_MODEL_FILE), true),
        };
        let (embed_model, embed_model_is_default) = match o
            .embed_model
            .clone()
            .or_else(|| env_path("RAG_EMBED_MODEL"))
            .or(file.embed_model)
        {
            Some(m) => (m, false),
            None => (home.join("models").join(DEFAULT_MODEL_FILE), true),
        };
        let env_embedder = match env("RAG_EMBEDDER").map(|s| s.to_string_lossy().into_owned()) {
            Some(s) if !s.is_empty() => Some(
                s.parse::<EmbedderKind>()
                    .map_err(|e| Error::InvalidOption(format!("RAG_EMBEDDER={s}: {e}")))?,
            ),
            _ => None,
        };
        let file_embedder = file
            .embedder
            .as_deref()
            .map(str::parse::<EmbedderKind>)
            .transpose()
            .map_err(bad)?;
        let embedder = o.embedder.or(env_embedder).or(file_embedder);
        let threads = o
            .threads
            .or(env_threads)
            .or(file.threads)
            .unwrap_or_else(default_threads);
        if threads == 0 {
            return Err(Error::InvalidOption("threads must be at least 1".into()));
        }
        Ok(Self {
            home,
            model,
            model_is_default,
            embed_model,
            embed_model_is_default,
            embedder,
            embed_pooling: None,
            embed_layer: None,
            threads,
            template: o.template.or(file_template),
            context: o.context.or(file.context),
            file: file_path,
        })
    }

    /// The model path, or an error that says how to get the default model.
    pub fn model_path(&self) -> Result<&Path> {
        if self.model_is_default && !self.model.exists() {
            return Err(Error::DefaultModelMissing {
                path: self.model.clone(),
            });
        }
        Ok(&self.model)
    }

    /// The embedding model path, or an error that says how to get the default model.
    pub fn embed_model_path(&self) -> Result<&Path> {
        if self.embed_model_is_default && !self.embed_model.exists() {
            return Err(Error::DefaultModelMissing {
                path: self.embed_model.clone(),
            });
        }
        Ok(&self.embed_model)
    }

    /// Model loading options from this config.
    pub fn model_options(&self) -> ModelOptions {
        ModelOptions {
            format: Default::default(),
            max_context: self.context,
            template: self.template,
        }
    }
}

/// `$RAG_HOME`, default `~/.cache/rag`.
pub fn rag_home() -> PathBuf {
    rag_home_with(&|k| std::env::var_os(k))
}

fn rag_home_with(env: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    let get = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    get("RAG_HOME").unwrap_or_else(|| {
        get("HOME")
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache")
            .join("rag")
    })
}

fn read_file_config(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| Error::Config {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let m: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn precedence_flag_env_file_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rag.toml");
        std::fs::write(
            &file,
            "model = \"/file.gguf\"\nthreads = 3\ntemplate = \"llama2\"\n",
        )
        .unwrap();
        let home = dir.path().to_str().unwrap();
        let with_file = Overrides {
            config: Some(file.clone()),
            ..Default::default()
        };
        // The file alone.
        let c = Config::resolve_with(&with_file, &env(&[("RAG_HOME", home)])).unwrap();
        assert_eq!(c.model, PathBuf::from("/file.gguf"));
        assert_eq!(c.threads, 3);
        assert_eq!(c.template, Some(TemplateFamily::Llama2));
        assert!(!c.model_is_default);
        // The environment beats the file.
        let e = env(&[
            ("RAG_HOME", home),
            ("RAG_MODEL", "/env.gguf"),
            ("RAG_THREADS", "5"),
        ]);
        let c = Config::resolve_with(&with_file, &e).unwrap();
        assert_eq!((c.model.to_str().unwrap(), c.threads), ("/env.gguf", 5));
        // Flags beat both.
        let flags = Overrides {
            model: Some("/flag.gguf".into()),
            threads: Some(1),
            ..with_file
        };
        let c = Config::resolve_with(&flags, &e).unwrap();
        assert_eq!((c.model.to_str().unwrap(), c.threads), ("/flag.gguf", 1));
        // The embedding model does not follow the chat model: it stays the default.
        assert!(c.embed_model_is_default);
        assert_eq!(
            c.embed_model,
            dir.path().join("models").join(DEFAULT_MODEL_FILE)
        );
        let e2 = env(&[("RAG_HOME", home), ("RAG_EMBED_MODEL", "/emb.gguf")]);
        let c = Config::resolve_with(&Overrides::default(), &e2).unwrap();
        assert_eq!(c.embed_model, PathBuf::from("/emb.gguf"));
        let c = Config::resolve_with(
            &Overrides {
                embed_model: Some("/flag-emb.gguf".into()),
                ..Default::default()
            },
            &e2,
        )
        .unwrap();
        assert_eq!(c.embed_model, PathBuf::from("/flag-emb.gguf"));
        // Nothing given: the default model under RAG_HOME, reported missing with the fix.
        let c = Config::resolve_with(&Overrides::default(), &env(&[("RAG_HOME", home)])).unwrap();
        assert!(c.model_is_default);
        assert_eq!(c.model, dir.path().join("models").join(DEFAULT_MODEL_FILE));
        let err = c.model_path().unwrap_err().to_string();
        assert!(err.contains("fetch-models.sh"), "{err}");
    }

    #[test]
    fn bad_values_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rag.toml");
        std::fs::write(&file, "modle = \"typo\"\n").unwrap();
        let o = Overrides {
            config: Some(file.clone()),
            ..Default::default()
        };
        let err = Config::resolve_with(&o, &env(&[])).unwrap_err().to_string();
        assert!(err.contains("rag.toml") && err.contains("modle"), "{err}");
        let err = Config::resolve_with(&Overrides::default(), &env(&[("RAG_THREADS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RAG_THREADS"), "{err}");
    }
}
