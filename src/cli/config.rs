//! From the command line to a [`rag::Config`]: flags > environment > config file > built-in
//! defaults. The only place that reads the environment.
//!
//! Environment: `RAG_HOME` (cache, default `~/.cache/rag`), `RAG_MODEL` (a GGUF path),
//! `RAG_EMBED_MODEL` (the GGUF that embeds chunks and queries), `RAG_EMBEDDER` (`llama` or
//! `minilm`), `RAG_THREADS`, `RAG_CONFIG` (a config file), `RAG_KERNELS=scalar` (the portable
//! kernels instead of AVX2), `RAG_KERNELS=avx2` (no 512-bit token loops where the CPU has
//! AVX-512), `RAG_KERNELS=avx2-plain` (AVX2, FMA and F16C alone: no VNNI, no 512-bit loops,
//! no tiles) or `RAG_KERNELS=avx512` (no AMX tiles where it has those). The config file is
//! `--config PATH`, else `RAG_CONFIG`, else `./rag.toml`, else `$RAG_HOME/config.toml`,
//! whichever exists first:
//!
//! ```toml
//! model = "/models/llama-2-7b-chat.Q4_K_M.gguf"
//! embed_model = "/models/SmolLM2-135M-Instruct.Q4_1.gguf"   # what embeds chunks and queries
//! embedder = "minilm"   # or "llama"
//! threads = 4
//! template = "llama2"   # or "chatml"; default: from the GGUF
//! context = 4096        # cap on the context window
//! store = "milvus://127.0.0.1:19530/notes"   # a Milvus collection instead of --index
//! ```
//!
//! `RAG_STORE` and `RAG_STORE_TOKEN` (or `MILVUS_TOKEN`) name a remote store and its token.
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Args;
use rag::{Config, EmbedderKind, HiddenLayer, Pooling, TemplateFamily};
use serde::Deserialize;

/// The flags every subcommand takes.
#[derive(Args, Debug, Default)]
pub struct GlobalArgs {
    /// GGUF model file (Llama architecture). Default: $RAG_MODEL, the config file, or the
    /// default model in $RAG_HOME/models.
    #[arg(long, global = true, value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// GGUF whose hidden states embed chunks and queries of a Llama-embedder index. Default:
    /// $RAG_EMBED_MODEL, the config file, or the default model, whatever --model is.
    #[arg(long, global = true, value_name = "PATH")]
    pub embed_model: Option<PathBuf>,
    /// Compute threads (default: $RAG_THREADS, the config file, or the number of cores).
    #[arg(long, short = 't', global = true, value_name = "N")]
    pub threads: Option<usize>,
    /// Chat template family, overriding what the GGUF says.
    #[arg(long, global = true, value_name = "llama2|chatml")]
    pub template: Option<TemplateFamily>,
    /// Cap on the context window in tokens (default: the model's, at most 8192).
    #[arg(long, global = true, value_name = "TOKENS")]
    pub context: Option<usize>,
    /// Config file (TOML: model, embed_model, embedder, threads, template, context, store).
    /// Default: ./rag.toml or $RAG_HOME/config.toml.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Keep the index in Milvus instead of --index: milvus://HOST:PORT[/COLLECTION], or
    /// https://ENDPOINT[/COLLECTION] for Zilliz Cloud (default collection `rag`). Default:
    /// $RAG_STORE, the config file, or the embedded store in --index.
    #[arg(long, global = true, value_name = "URI")]
    pub store: Option<String>,
    /// Token of the --store server (a Zilliz Cloud API key, or USER:PASSWORD). Default:
    /// $RAG_STORE_TOKEN, then $MILVUS_TOKEN, then the config file's store_token.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub store_token: Option<String>,
}

#[derive(Args)]
pub struct LlamaVariantArgs {
    /// Llama embedder of a new index: pooling of the hidden states (mean, last token, or echo:
    /// the text read twice, its second copy averaged)
    #[arg(long, value_name = "mean|last|echo")]
    pub pooling: Option<Pooling>,
    /// Llama embedder of a new index: hidden states after this block (0-based) instead of the
    /// final normed layer.
    #[arg(long, value_name = "N")]
    pub layer: Option<usize>,
    /// Llama embedder of a new index: keep the pooled states as they are, without evening out
    /// their dimensions by the model's calibration statistics (retrieves worse; for comparison).
    #[arg(long)]
    pub no_standardize: bool,
}

impl LlamaVariantArgs {
    /// Put the variant into the config (the Llama embedder of a new index reads it).
    pub fn apply(&self, config: &mut Config) {
        config.embed_pooling = self.pooling;
        config.embed_layer = self.layer.map(HiddenLayer::After);
        config.embed_standardize = self.no_standardize.then_some(false);
    }
}

#[derive(Args)]
pub struct IndexArg {
    /// Index directory.
    #[arg(long, default_value = ".rag", value_name = "DIR")]
    pub index: PathBuf,
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
    store: Option<String>,
    store_token: Option<String>,
}

/// The config of this run, from the flags and the process environment; sizes the thread pool
/// and picks the kernels.
pub fn resolve(args: &GlobalArgs) -> Result<Config> {
    let config = resolve_with(args, &|k| std::env::var_os(k))?;
    rag_model::set_threads(config.threads_or_default())?;
    use rag_model::engine::quant;
    match std::env::var("RAG_KERNELS").map(|v| v.trim().to_ascii_lowercase()) {
        Ok(v) if v == "scalar" => {
            quant::set_kernels(quant::Kernels::Scalar);
        }
        // The 256-bit kernels only, where the CPU also has AVX-512 (for comparisons).
        Ok(v) if v == "avx2" => {
            quant::set_wide(false);
        }
        // AVX2, FMA and F16C alone: what a CPU without AVX-VNNI or AVX-512 runs (for
        // comparisons; VNNI off turns the 512-bit loops and the tiles off too).
        Ok(v) if v == "avx2-plain" => {
            quant::set_vnni(false);
        }
        // No AMX tiles, where the CPU has them (for comparisons).
        Ok(v) if v == "avx512" => {
            quant::set_amx(false);
        }
        // Unset or empty: what the CPU has.
        Ok(v) if v.is_empty() => {}
        Err(std::env::VarError::NotPresent) => {}
        Ok(v) => bail!(
            "RAG_KERNELS={v}: expected scalar, avx2, avx2-plain or avx512 (or unset, for what \
             this CPU has)"
        ),
        Err(std::env::VarError::NotUnicode(_)) => {
            bail!("RAG_KERNELS is not valid UTF-8: expected scalar, avx2, avx2-plain or avx512")
        }
    }
    Ok(config)
}

/// [`resolve`] with the environment given as a lookup function (and no side effects).
fn resolve_with(args: &GlobalArgs, env: &dyn Fn(&str) -> Option<OsString>) -> Result<Config> {
    let env_path = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let env_str = |k: &str| {
        env(k)
            .map(|s| s.to_string_lossy().into_owned())
            .filter(|s| !s.is_empty())
    };
    let home = rag_home_with(env);
    let file_path = args
        .config
        .clone()
        .or_else(|| env_path("RAG_CONFIG"))
        .or_else(|| Some(PathBuf::from("rag.toml")).filter(|p| p.exists()))
        .or_else(|| Some(home.join("config.toml")).filter(|p| p.exists()));
    let file = match &file_path {
        Some(p) => read_file_config(p)?,
        None => FileConfig::default(),
    };
    let in_file = |what: &str| {
        let p = file_path.clone().unwrap_or_default();
        format!("config file {}: {what}", p.display())
    };
    let file_template = file
        .template
        .as_deref()
        .map(str::parse::<TemplateFamily>)
        .transpose()
        .map_err(anyhow::Error::msg)
        .with_context(|| in_file("template"))?;
    let file_embedder = file
        .embedder
        .as_deref()
        .map(str::parse::<EmbedderKind>)
        .transpose()
        .map_err(anyhow::Error::msg)
        .with_context(|| in_file("embedder"))?;
    let env_threads = match env_str("RAG_THREADS") {
        Some(s) => Some(
            s.parse::<usize>()
                .map_err(|_| anyhow::anyhow!("RAG_THREADS={s} is not a whole number"))?,
        ),
        None => None,
    };
    let env_embedder = match env_str("RAG_EMBEDDER") {
        Some(s) => Some(
            s.parse::<EmbedderKind>()
                .map_err(|e| anyhow::anyhow!("RAG_EMBEDDER={s}: {e}"))?,
        ),
        None => None,
    };
    let threads = args.threads.or(env_threads).or(file.threads);
    if threads == Some(0) {
        bail!("threads must be at least 1");
    }
    let mut config = Config::new(home);
    config.model = args
        .model
        .clone()
        .or_else(|| env_path("RAG_MODEL"))
        .or(file.model);
    config.embed_model = args
        .embed_model
        .clone()
        .or_else(|| env_path("RAG_EMBED_MODEL"))
        .or(file.embed_model);
    config.embedder = env_embedder.or(file_embedder);
    config.threads = threads;
    config.template = args.template.or(file_template);
    config.context = args.context.or(file.context);
    config.store = args
        .store
        .clone()
        .or_else(|| env_str("RAG_STORE"))
        .or(file.store);
    config.store_token = args
        .store_token
        .clone()
        .or_else(|| env_str("RAG_STORE_TOKEN"))
        .or_else(|| env_str("MILVUS_TOKEN"))
        .or(file.store_token);
    if let Some(s) = &config.store {
        // A bad address is reported now, naming where it came from.
        rag::Location::parse(s, None).with_context(|| {
            if args.store.is_some() {
                "--store".to_string()
            } else if env_str("RAG_STORE").is_some() {
                "RAG_STORE".to_string()
            } else {
                in_file("store")
            }
        })?;
    }
    Ok(config)
}

/// `$RAG_HOME`, default `~/.cache/rag`.
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
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("config file {}", path.display()))
}

/// The folder of evaluation data (`data/scifact`, `data/squad-v1.1-dev`): `$RAG_SHARED`, else
/// `../shared` beside the repository this binary was built from.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("RAG_SHARED")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"))
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
        let with_file = GlobalArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        // The file alone.
        let c = resolve_with(&with_file, &env(&[("RAG_HOME", home)])).unwrap();
        assert_eq!(c.model, Some(PathBuf::from("/file.gguf")));
        assert_eq!(c.threads, Some(3));
        assert_eq!(c.template, Some(TemplateFamily::Llama2));
        // The environment beats the file.
        let e = env(&[
            ("RAG_HOME", home),
            ("RAG_MODEL", "/env.gguf"),
            ("RAG_THREADS", "5"),
        ]);
        let c = resolve_with(&with_file, &e).unwrap();
        assert_eq!(
            (c.model.as_deref().unwrap().to_str().unwrap(), c.threads),
            ("/env.gguf", Some(5))
        );
        // Flags beat both.
        let flags = GlobalArgs {
            model: Some("/flag.gguf".into()),
            threads: Some(1),
            ..with_file
        };
        let c = resolve_with(&flags, &e).unwrap();
        assert_eq!(
            (c.model.as_deref().unwrap().to_str().unwrap(), c.threads),
            ("/flag.gguf", Some(1))
        );
        // The embedding model does not follow the chat model: it stays the default.
        assert_eq!(c.embed_model, None);
        let e2 = env(&[("RAG_HOME", home), ("RAG_EMBED_MODEL", "/emb.gguf")]);
        let c = resolve_with(&GlobalArgs::default(), &e2).unwrap();
        assert_eq!(c.embed_model, Some(PathBuf::from("/emb.gguf")));
        let c = resolve_with(
            &GlobalArgs {
                embed_model: Some("/flag-emb.gguf".into()),
                ..Default::default()
            },
            &e2,
        )
        .unwrap();
        assert_eq!(c.embed_model, Some(PathBuf::from("/flag-emb.gguf")));
        // Nothing given: the default model under RAG_HOME, reported missing with the fix.
        let c = resolve_with(&GlobalArgs::default(), &env(&[("RAG_HOME", home)])).unwrap();
        assert_eq!(c.model, None);
        assert_eq!(c.home, dir.path());
        let err = c.model_path().unwrap_err().to_string();
        assert!(err.contains("fetch-models.sh"), "{err}");
        assert!(err.contains(&rag::default_model_in(dir.path()).display().to_string()));
    }

    #[test]
    fn bad_values_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("rag.toml");
        std::fs::write(&file, "modle = \"typo\"\n").unwrap();
        let o = GlobalArgs {
            config: Some(file.clone()),
            ..Default::default()
        };
        let err = format!("{:#}", resolve_with(&o, &env(&[])).unwrap_err());
        assert!(err.contains("rag.toml") && err.contains("modle"), "{err}");
        let err = resolve_with(&GlobalArgs::default(), &env(&[("RAG_THREADS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("RAG_THREADS"), "{err}");
        std::fs::write(&file, "embedder = \"bert\"\n").unwrap();
        let err = format!("{:#}", resolve_with(&o, &env(&[])).unwrap_err());
        assert!(err.contains("rag.toml") && err.contains("bert"), "{err}");
    }
}
