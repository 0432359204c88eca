//! Opening GGUF files: magic check, header parsing and hyperparameters, with errors that name the
//! file. [`GgufFile::raw_tensor`] and [`GgufFile::tensor`] read one tensor each.
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};

use crate::error::{ModelError, Result};

/// A GGUF file whose header has been read and checked.
pub struct GgufFile {
    pub(crate) path: PathBuf,
    pub(crate) content: Content,
    pub(crate) reader: BufReader<File>,
    pub(crate) file_size: u64,
}

impl GgufFile {
    /// Open `path`, check the magic bytes, parse the header and check that every tensor's data
    /// lies inside the file (a truncated download is reported here, not halfway through loading).
    pub fn open(path: &Path) -> Result<Self> {
        let io_err = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        if !path.exists() {
            return Err(ModelError::ModelNotFound {
                path: path.to_path_buf(),
            });
        }
        let file = File::open(path).map_err(io_err)?;
        let file_size = file.metadata().map_err(io_err)?.len();
        let mut reader = BufReader::new(file);
        let mut magic = [0u8; 4];
        let n = read_up_to(&mut reader, &mut magic).map_err(io_err)?;
        if &magic[..n] != b"GGUF" {
            return Err(ModelError::NotGguf {
                path: path.to_path_buf(),
                magic: String::from_utf8_lossy(&magic[..n]).into_owned(),
            });
        }
        reader.rewind().map_err(io_err)?;
        let content = Content::read(&mut reader).map_err(|e| ModelError::CorruptGguf {
            path: path.to_path_buf(),
            detail: format!("header: {e}"),
        })?;
        for (name, info) in &content.tensor_infos {
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            let bytes = (elems / block * info.ggml_dtype.type_size()) as u64;
            let end = content
                .tensor_data_offset
                .saturating_add(info.offset)
                .saturating_add(bytes);
            if end > file_size {
                return Err(ModelError::CorruptGguf {
                    path: path.to_path_buf(),
                    detail: format!(
                        "tensor {name} ends at byte {end} but the file has {file_size} bytes"
                    ),
                });
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
            file_size,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The parsed header.
    pub fn content(&self) -> &Content {
        &self.content
    }

    /// A metadata value, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// A metadata string, if present and a string.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// An unsigned integer hyperparameter `{arch}.{key}`, or an error naming the key.
    pub(crate) fn arch_u32(&self, arch: &str, key: &str) -> Result<usize> {
        let full = format!("{arch}.{key}");
        self.get(&full)
            .and_then(value_as_u64)
            .map(|v| v as usize)
            .ok_or_else(|| self.bad(format!("metadata key {full} is missing or not an integer")))
    }

    /// A float hyperparameter `{arch}.{key}`, if present.
    pub(crate) fn arch_f32(&self, arch: &str, key: &str) -> Option<f32> {
        self.get(&format!("{arch}.{key}")).and_then(|v| match v {
            Value::F32(x) => Some(*x),
            Value::F64(x) => Some(*x as f32),
            _ => None,
        })
    }

    pub(crate) fn bad(&self, detail: String) -> ModelError {
        ModelError::BadModel {
            path: self.path.clone(),
            detail,
        }
    }

    /// Read one tensor, mapping errors to a message that names the file.
    pub(crate) fn tensor(
        &mut self,
        name: &str,
        device: &candle_core::Device,
    ) -> Result<candle_core::quantized::QTensor> {
        if !self.content.tensor_infos.contains_key(name) {
            return Err(self.bad(format!("tensor {name} is missing")));
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| ModelError::CorruptGguf {
                path: self.path.clone(),
                detail: format!("tensor {name}: {e}"),
            })
    }

    /// Read one tensor's bytes as stored (blocks of its GGML type), with its type and its shape
    /// in row-major order (`[rows, cols]` for a matrix).
    pub(crate) fn raw_tensor(
        &mut self,
        name: &str,
    ) -> Result<(candle_core::quantized::GgmlDType, Vec<usize>, Vec<u8>)> {
        use std::io::SeekFrom;
        let Some(info) = self.content.tensor_infos.get(name) else {
            return Err(self.bad(format!("tensor {name} is missing")));
        };
        let dtype = info.ggml_dtype;
        let dims = info.shape.dims().to_vec();
        let bytes = info.shape.elem_count() / dtype.block_size() * dtype.type_size();
        let start = self.content.tensor_data_offset + info.offset;
        let mut data = vec![0u8; bytes];
        let io_err = |source| ModelError::Io {
            path: self.path.clone(),
            source,
        };
        self.reader.seek(SeekFrom::Start(start)).map_err(io_err)?;
        self.reader.read_exact(&mut data).map_err(io_err)?;
        Ok((dtype, dims, data))
    }

    pub(crate) fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// How many parameters and bytes each GGML type holds, as `(type, params)` sorted by size.
    pub fn tensor_types(&self) -> Vec<(String, usize)> {
        let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
        for info in self.content.tensor_infos.values() {
            *by_type.entry(format!("{:?}", info.ggml_dtype)).or_default() +=
                info.shape.elem_count();
        }
        let mut v: Vec<_> = by_type.into_iter().collect();
        v.sort_by_key(|t| std::cmp::Reverse(t.1));
        v
    }

    /// Total parameter count.
    pub fn parameter_count(&self) -> usize {
        self.content
            .tensor_infos
            .values()
            .map(|i| i.shape.elem_count())
            .sum()
    }

    /// File size in bytes.
    pub fn file_size(&self) -> u64 {
        self.file_size
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

pub(crate) fn value_as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}
