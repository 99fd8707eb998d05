//! One measurement, as a child process reports it to the driver (one
//! `BENCH {json}` line on stdout) and as `--json` prints it.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Value {
    /// `ops` operations in `secs` seconds.
    Rate {
        ops: u64,
        secs: f64,
    },
    /// Bytes allocated on disk (`st_blocks`) for `raw` bytes of live keys
    /// and values.
    Size {
        bytes: u64,
        raw: u64,
    },
    /// Peak resident memory (VmHWM) of the process, and its VmHWM before
    /// the engine was opened.
    Memory {
        bytes: u64,
        baseline: u64,
    },
    NotSupported {
        reason: String,
    },
    Failed {
        error: String,
    },
}

impl Value {
    pub fn rate(&self) -> Option<f64> {
        match *self {
            Value::Rate { ops, secs } if secs > 0.0 => Some(ops as f64 / secs),
            _ => None,
        }
    }

    /// The number compared across engines: a rate (higher is better) or a
    /// byte count (lower is better).
    pub fn figure(&self) -> Option<f64> {
        match *self {
            Value::Rate { .. } => self.rate(),
            Value::Size { bytes, .. } | Value::Memory { bytes, .. } => Some(bytes as f64),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Measure {
    pub id: String,
    pub value: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// CPU seconds the process used during the row (every thread), to
    /// tell a row that lost its core to other work.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_secs: Option<f64>,
}

impl Measure {
    pub fn new(id: &str, value: Value) -> Measure {
        Measure {
            id: id.to_string(),
            value,
            note: None,
            cpu_secs: None,
        }
    }

    /// CPU time used per second of wall time (1.0 = one full core).
    pub fn cpu_share(&self) -> Option<f64> {
        match (&self.value, self.cpu_secs) {
            (Value::Rate { secs, .. }, Some(c)) if *secs > 0.0 => Some(c / secs),
            _ => None,
        }
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Measure {
        self.note = Some(note.into());
        self
    }
}

pub const PREFIX: &str = "BENCH ";

/// Prints `m` for the driver (and flushes, so that a later crash keeps it).
pub fn emit(m: &Measure) {
    use std::io::Write;
    let line = serde_json::to_string(m).expect("serialize");
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{PREFIX}{line}");
    let _ = out.flush();
}
