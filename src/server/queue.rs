//! The line for the model: one answer runs at a time, at most `capacity` more wait, the rest
//! are turned away at once (the handler answers `503` with `Retry-After`).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub(crate) struct ModelQueue {
    model: Arc<Semaphore>,
    /// Answers admitted and not yet finished (running or waiting).
    admitted: Arc<AtomicUsize>,
    capacity: usize,
}

/// A place in the line; leaving it (dropping it, e.g. when the client goes away) frees it.
pub(crate) struct Place {
    model: Arc<Semaphore>,
    admitted: Arc<AtomicUsize>,
    /// Answers admitted before this one that had not finished when it joined.
    pub ahead: usize,
}

/// The turn at the model; the next answer starts when it is dropped.
pub(crate) struct Turn {
    _permit: OwnedSemaphorePermit,
    _place: Place,
}

impl ModelQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            model: Arc::new(Semaphore::new(1)),
            admitted: Arc::new(AtomicUsize::new(0)),
            capacity,
        }
    }

    /// A place in the line, or `None` when `capacity` answers already wait.
    pub fn join(&self) -> Option<Place> {
        let limit = self.capacity + 1;
        let ahead = self
            .admitted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(Place {
            model: Arc::clone(&self.model),
            admitted: Arc::clone(&self.admitted),
            ahead,
        })
    }

    /// (running, waiting).
    pub fn load(&self) -> (usize, usize) {
        let admitted = self.admitted.load(Ordering::Acquire);
        let running = usize::from(self.model.available_permits() == 0);
        (running, admitted.saturating_sub(running))
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Seconds a client turned away should wait before trying again: a guess from the line's
    /// length (an answer takes a few seconds on the default model).
    pub fn retry_after(&self) -> u64 {
        2 + 2 * self.admitted.load(Ordering::Acquire) as u64
    }
}

impl Place {
    /// Wait for the model.
    pub async fn turn(self) -> Turn {
        let permit = Arc::clone(&self.model)
            .acquire_owned()
            .await
            .expect("the model semaphore is never closed");
        Turn {
            _permit: permit,
            _place: self,
        }
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        self.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_runs_capacity_waits_the_rest_are_refused() {
        let q = ModelQueue::new(2);
        let a = q.join().unwrap();
        let b = q.join().unwrap();
        let c = q.join().unwrap();
        assert_eq!((a.ahead, b.ahead, c.ahead), (0, 1, 2));
        assert!(q.join().is_none(), "one running and two waiting is full");
        let turn = a.turn().await;
        assert_eq!(q.load(), (1, 2));
        // The next one waits until the turn ends.
        let waiting = tokio::spawn(b.turn());
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(turn);
        let turn_b = waiting.await.unwrap();
        assert_eq!(q.load(), (1, 1));
        // A place given up (client gone) frees room in the line.
        drop(c);
        assert_eq!(q.load(), (1, 0));
        assert!(q.join().is_some());
        drop(turn_b);
    }
}
