//! TODO(helper): implement.

use super::{RouteRequest, Router};

#[derive(Debug, Default, Clone, Copy)]
pub struct RoundRobin;

impl Router for RoundRobin {
    fn route(&self, request: &RouteRequest) -> Vec<Option<u32>> {
        super::Rendezvous.route(request)
    }
}
