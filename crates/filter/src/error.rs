//! [`FilterError`]: why an expression did not compile, and where.

/// A compile error, pointing at a 1-based character column of the expression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("column {column}: {message}")]
pub struct FilterError {
    /// 1-based character (not byte) column of the offending token.
    pub column: usize,
    /// What went wrong, in tcpdump's wording where there is one.
    pub message: String,
    /// The expression that failed to compile.
    pub expr: String,
}

impl FilterError {
    pub(crate) fn new(expr: &str, column: usize, message: impl Into<String>) -> FilterError {
        FilterError { column: column.max(1), message: message.into(), expr: expr.to_string() }
    }

    /// A line with a caret under the offending column, to print below the expression.
    ///
    /// ```
    /// let e = streamnf_filter::Filter::compile("port http2").unwrap_err();
    /// assert_eq!(e.caret_line(), "     ^");
    /// ```
    pub fn caret_line(&self) -> String {
        format!("{}^", " ".repeat(self.column - 1))
    }

    /// The expression, the caret line and the message, on three lines.
    pub fn render(&self) -> String {
        format!("{}\n{}\n{}", self.expr, self.caret_line(), self)
    }
}
