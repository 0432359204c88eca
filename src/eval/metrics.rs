//! Ranking and answer metrics, computed from ranked ids and gold sets.
