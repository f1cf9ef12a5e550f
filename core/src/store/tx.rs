//! The write transaction of [`super::Store::apply`], on either backend.
//! PostgreSQL runs it on a native connection, whose `COPY` takes a batch's
//! messages (see `insert_messages` in `store/batch.rs`); sqlx's `Any`
//! connection has no `COPY`. SQLite runs it on the `Any` connection, as
//! every read does. The statements are the same text on both: built as a
//! [`Statement`] of text and integer parameters, bound here for the
//! connection at hand.

use std::borrow::Cow;

use sqlx::any::AnyRow;
use sqlx::postgres::PgRow;
use sqlx::{Any, Postgres, Row, Transaction};

use super::batch::Marks;

/// An open write transaction.
pub(super) enum Tx {
    Postgres(Transaction<'static, Postgres>),
    Sqlite(Transaction<'static, Any>),
}

/// One parameter of a [`Statement`]: the store binds text and integers only.
#[derive(Debug, Clone, Copy)]
enum Param<'q> {
    Text(&'q str),
    Int(i64),
}

/// A statement and its parameters, in order. A fixed statement is
/// borrowed, not copied: read markers and room commands run one per record.
#[derive(Debug)]
pub(super) struct Statement<'q> {
    sql: Cow<'q, str>,
    params: Vec<Param<'q>>,
}

impl<'q> Statement<'q> {
    pub(super) fn new(sql: impl Into<Cow<'q, str>>) -> Self {
        Self { sql: sql.into(), params: Vec::new() }
    }

    pub(super) fn text(mut self, value: &'q str) -> Self {
        self.params.push(Param::Text(value));
        self
    }

    pub(super) fn int(mut self, value: i64) -> Self {
        self.params.push(Param::Int(value));
        self
    }

    /// Binds each of `values` as text.
    pub(super) fn texts(mut self, values: &[&'q str]) -> Self {
        self.params.extend(values.iter().map(|v| Param::Text(v)));
        self
    }
}

/// Binds a statement's parameters to a query of either backend (the two
/// query types share no trait that `bind` is on).
macro_rules! bound {
    ($statement:expr) => {{
        let statement = $statement;
        let mut query = sqlx::query(&statement.sql);
        for param in &statement.params {
            query = match *param {
                Param::Text(value) => query.bind(value),
                Param::Int(value) => query.bind(value),
            };
        }
        query
    }};
}

impl Tx {
    /// The parameter marks the backend parses fastest.
    pub(super) fn marks(&self) -> Marks {
        match self {
            Tx::Postgres(_) => Marks::Numbered,
            Tx::Sqlite(_) => Marks::Positional,
        }
    }

    /// Runs a statement; the rows it changed.
    pub(super) async fn execute(&mut self, statement: Statement<'_>) -> Result<u64, sqlx::Error> {
        Ok(match self {
            Tx::Postgres(tx) => bound!(&statement).execute(&mut **tx).await?.rows_affected(),
            Tx::Sqlite(tx) => bound!(&statement).execute(&mut **tx).await?.rows_affected(),
        })
    }

    /// Runs a query; every row it answers.
    pub(super) async fn fetch_all(&mut self, statement: Statement<'_>) -> Result<Vec<TxRow>, sqlx::Error> {
        Ok(match self {
            Tx::Postgres(tx) => {
                bound!(&statement).fetch_all(&mut **tx).await?.into_iter().map(TxRow::Postgres).collect()
            }
            Tx::Sqlite(tx) => bound!(&statement).fetch_all(&mut **tx).await?.into_iter().map(TxRow::Sqlite).collect(),
        })
    }

    /// Runs a query; its first row, if any.
    pub(super) async fn fetch_optional(&mut self, statement: Statement<'_>) -> Result<Option<TxRow>, sqlx::Error> {
        Ok(match self {
            Tx::Postgres(tx) => bound!(&statement).fetch_optional(&mut **tx).await?.map(TxRow::Postgres),
            Tx::Sqlite(tx) => bound!(&statement).fetch_optional(&mut **tx).await?.map(TxRow::Sqlite),
        })
    }

    /// The native PostgreSQL connection, for what only it can do (`COPY`).
    pub(super) fn postgres(&mut self) -> Option<&mut sqlx::PgConnection> {
        match self {
            Tx::Postgres(tx) => Some(&mut **tx),
            Tx::Sqlite(_) => None,
        }
    }

    pub(super) async fn commit(self) -> Result<(), sqlx::Error> {
        match self {
            Tx::Postgres(tx) => tx.commit().await,
            Tx::Sqlite(tx) => tx.commit().await,
        }
    }
}

/// A row a [`Tx`] answered.
pub(super) enum TxRow {
    Postgres(PgRow),
    Sqlite(AnyRow),
}

/// Reads a row's text and integer columns by name, on either backend.
pub(super) trait Columns {
    fn text(&self, column: &str) -> Result<String, sqlx::Error>;
    fn int(&self, column: &str) -> Result<i64, sqlx::Error>;
}

impl Columns for AnyRow {
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        self.try_get(column)
    }

    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        self.try_get(column)
    }
}

impl Columns for TxRow {
    fn text(&self, column: &str) -> Result<String, sqlx::Error> {
        match self {
            TxRow::Postgres(row) => row.try_get(column),
            TxRow::Sqlite(row) => row.try_get(column),
        }
    }

    fn int(&self, column: &str) -> Result<i64, sqlx::Error> {
        match self {
            TxRow::Postgres(row) => row.try_get(column),
            TxRow::Sqlite(row) => row.try_get(column),
        }
    }
}
