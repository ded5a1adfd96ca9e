//! Varlen (block-diagonal) causal attention: the layout of a packed batch, the CubeCL kernels, and
//! their registration on Burn's CubeCL, fusion and autodiff backends.

mod autodiff;
pub mod cube;
mod fusion;
pub mod kernel;
pub mod layout;
