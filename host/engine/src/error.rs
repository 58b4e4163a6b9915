use std::path::PathBuf;

/// Everything the engine can fail with; messages are meant for the person who made the request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    InvalidRequest { field: String, message: String },
    #[error("generation was cancelled")]
    Cancelled,
    #[error("{0}")]
    Image(String),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, EngineError>;

impl EngineError {
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EngineError::Checkpoint { path: path.into(), message: message.into() }
    }
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        EngineError::InvalidRequest { field: field.into(), message: message.into() }
    }
}
