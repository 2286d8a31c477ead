//! Flatten: a view, not a kernel.

use super::{Context, Layer};
use crate::gpu::{Encoder, Tensor};
use crate::quant::Quantizer;
use crate::Result;

/// Moves no data: the plan gives its output the input's tensor, and its output gradient the
/// input's gradient buffer.
#[derive(Debug)]
pub(super) struct Flatten;

impl Layer for Flatten {
    fn forward(&self, _: &Context<'_>, _: &mut Encoder) -> Result<()> {
        Ok(())
    }

    fn backward(&self, _: &mut Context<'_>, _: &mut Encoder, _: &Tensor) -> Result<()> {
        Ok(())
    }

    fn quantizers(&self) -> Vec<&Quantizer> {
        Vec::new()
    }
}
