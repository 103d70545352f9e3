//! Errors as UmaDB encodes them: a gRPC status with the matching code, and a
//! `umadb.v1.ErrorResponse` in its details, from which UmaDB's clients raise their own typed
//! errors (Python's `umadb.IntegrityError` for a failed condition, and so on).

use prost::Message as _;
use tonic::{Code, Status};

use crate::backend::BackendError;
use crate::proto::ErrorResponse;
use crate::proto::error_response::ErrorType;

/// A status with `code`, `message`, and the error response of `kind` in its details.
pub(crate) fn status(code: Code, kind: ErrorType, message: impl Into<String>) -> Status {
    let message = message.into();
    let details = ErrorResponse {
        message: message.clone(),
        error_type: kind as i32,
    };
    Status::with_details(code, message, details.encode_to_vec().into())
}

/// A malformed request.
pub(crate) fn invalid(message: impl Into<String>) -> Status {
    status(Code::InvalidArgument, ErrorType::InvalidArgument, message)
}

/// A missing or wrong API key.
pub(crate) fn unauthenticated() -> Status {
    status(
        Code::Unauthenticated,
        ErrorType::Authentication,
        "missing or invalid API key",
    )
}

/// The status of a store error.
///
/// | error | code | error type |
/// |---|---|---|
/// | append condition failed, tracking position not increasing, an id stored with other content | `FAILED_PRECONDITION` | `INTEGRITY` |
/// | invalid input | `INVALID_ARGUMENT` | `INVALID_ARGUMENT` |
/// | a stored row that cannot be decoded | `DATA_LOSS` | `CORRUPTION` |
/// | retryable (timeouts, pool exhausted, connection lost) | `UNAVAILABLE` | `IO` |
/// | anything else | `INTERNAL` | `INTERNAL` |
pub(crate) fn from_backend(e: &BackendError) -> Status {
    use dcbstore::Error;
    let message = e.to_string();
    match e {
        BackendError::TrackingNotIncreasing { .. } => {
            status(Code::FailedPrecondition, ErrorType::Integrity, message)
        }
        BackendError::Store(
            Error::AppendConditionFailed { .. }
            | Error::IdempotencyConflict { .. }
            | Error::DuplicateEventId { .. },
        ) => status(Code::FailedPrecondition, ErrorType::Integrity, message),
        BackendError::Store(Error::InvalidInput(_)) => invalid(message),
        BackendError::Store(Error::Decode { .. }) => {
            status(Code::DataLoss, ErrorType::Corruption, message)
        }
        e if e.is_retryable() => status(Code::Unavailable, ErrorType::Io, message),
        _ => status(Code::Internal, ErrorType::Internal, message),
    }
}

/// The status of an error of the store itself.
pub(crate) fn from_store(e: dcbstore::Error) -> Status {
    from_backend(&BackendError::Store(e))
}
