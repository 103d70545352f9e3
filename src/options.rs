//! How to read: [`ReadOptions`].

/// How to read: where to start, how many events at most, in which direction.
///
/// ```
/// use dcbstore::ReadOptions;
///
/// let opts = ReadOptions::default().from_position(10).limit(5).backwards();
/// assert_eq!((opts.from, opts.limit, opts.backwards), (Some(10), Some(5), true));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReadOptions {
    /// First position to return (inclusive). Reading backwards, the highest position to return.
    pub from: Option<u64>,
    /// At most this many events.
    pub limit: Option<u64>,
    /// Newest first.
    pub backwards: bool,
}

impl ReadOptions {
    /// Starts at `position` (inclusive).
    ///
    /// ```
    /// assert_eq!(dcbstore::ReadOptions::default().from_position(3).from, Some(3));
    /// ```
    pub fn from_position(mut self, position: u64) -> Self {
        self.from = Some(position);
        self
    }

    /// Returns at most `limit` events.
    ///
    /// ```
    /// assert_eq!(dcbstore::ReadOptions::default().limit(1).limit, Some(1));
    /// ```
    pub fn limit(mut self, limit: u64) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Reads newest first.
    ///
    /// ```
    /// assert!(dcbstore::ReadOptions::default().backwards().backwards);
    /// ```
    pub fn backwards(mut self) -> Self {
        self.backwards = true;
        self
    }
}
