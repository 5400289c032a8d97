//! The command-line tools beside the operator — `doctor`, `check` and `login` — as commands over
//! the Microsoft client. None of them knows kube-runtime.

pub mod check;
pub mod doctor;
pub mod login;
pub mod manifests;
