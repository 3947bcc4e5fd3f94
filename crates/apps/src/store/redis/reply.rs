//! Reading the script's replies: arrays of strings and integers, walked in order, and
//! hashes as their flat field/value lists. Nothing from Redis is trusted to have the
//! expected shape: a surprise is a [`StoreError::Backend`], never a panic.

use std::collections::HashMap;

use redis::Value;

use crate::store::{StoreError, StoreResult};

/// The error for a reply of the wrong shape.
pub(super) fn unexpected(what: &str) -> StoreError {
    StoreError::Backend(format!("unexpected reply from Redis: {what}"))
}

/// The items of an array reply, read front to back.
#[derive(Debug)]
pub(super) struct Items(std::vec::IntoIter<Value>);

impl Items {
    /// The items of `value`, an array (`Nil`, what an empty Lua table may come back as,
    /// reads as no items).
    pub(super) fn new(value: Value) -> StoreResult<Items> {
        match value {
            Value::Array(items) | Value::Set(items) => Ok(Items(items.into_iter())),
            Value::Nil => Ok(Items(Vec::new().into_iter())),
            other => Err(unexpected(&format!(
                "{other:?} where an array was expected"
            ))),
        }
    }

    /// Items left.
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none are left.
    pub(super) fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    fn next_value(&mut self) -> StoreResult<Value> {
        self.0
            .next()
            .ok_or_else(|| unexpected("an array too short"))
    }

    /// The next item as text.
    pub(super) fn text(&mut self) -> StoreResult<String> {
        text(self.next_value()?)
    }

    /// The next item as an integer (an integer reply or a decimal string).
    pub(super) fn int(&mut self) -> StoreResult<i64> {
        int(self.next_value()?)
    }

    /// The next item as a count (negative ones read as 0).
    pub(super) fn count(&mut self) -> StoreResult<u64> {
        Ok(self.int()?.max(0) as u64)
    }

    /// The next item as a flag (`1` / `"1"` is true).
    pub(super) fn flag(&mut self) -> StoreResult<bool> {
        Ok(self.int()? != 0)
    }

    /// The next item, an array.
    pub(super) fn items(&mut self) -> StoreResult<Items> {
        Items::new(self.next_value()?)
    }

    /// The next item, a hash as its flat field/value list.
    pub(super) fn fields(&mut self) -> StoreResult<Fields> {
        Fields::new(self.next_value()?)
    }
}

/// A reply that is one integer (or one decimal string).
pub(super) fn int(value: Value) -> StoreResult<i64> {
    match value {
        Value::Int(n) => Ok(n),
        other => parse_int(&text(other)?),
    }
}

fn text(value: Value) -> StoreResult<String> {
    match value {
        Value::BulkString(bytes) => {
            String::from_utf8(bytes).map_err(|_| unexpected("text that is not UTF-8"))
        }
        Value::SimpleString(s) => Ok(s),
        Value::Int(n) => Ok(n.to_string()),
        Value::Okay => Ok("OK".into()),
        other => Err(unexpected(&format!("{other:?} where text was expected"))),
    }
}

fn parse_int(s: &str) -> StoreResult<i64> {
    s.parse()
        .map_err(|_| unexpected(&format!("{s:?} where an integer was expected")))
}

/// A hash's fields, by name.
#[derive(Debug)]
pub(super) struct Fields(HashMap<String, String>);

impl Fields {
    fn new(value: Value) -> StoreResult<Fields> {
        let mut items = Items::new(value)?;
        let mut map = HashMap::with_capacity(items.len() / 2);
        while !items.is_empty() {
            let name = items.text()?;
            map.insert(name, items.text()?);
        }
        Ok(Fields(map))
    }

    /// A field's text.
    pub(super) fn text(&self, name: &str) -> StoreResult<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| unexpected(&format!("a record without its field {name:?}")))
    }

    /// A field as an integer.
    pub(super) fn int(&self, name: &str) -> StoreResult<i64> {
        parse_int(self.text(name)?)
    }

    /// A field as a count (negative ones read as 0).
    pub(super) fn count(&self, name: &str) -> StoreResult<u64> {
        Ok(self.int(name)?.max(0) as u64)
    }

    /// A field as a flag (`"1"` is true).
    pub(super) fn flag(&self, name: &str) -> StoreResult<bool> {
        Ok(self.text(name)? == "1")
    }

    /// A field that holds an integer or is empty (none).
    pub(super) fn opt_int(&self, name: &str) -> StoreResult<Option<i64>> {
        match self.text(name)? {
            "" => Ok(None),
            s => parse_int(s).map(Some),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn items_read_in_order_and_refuse_surprises() {
        let mut items = Items::new(Value::Array(vec![
            bulk("ok"),
            Value::Int(7),
            bulk("12"),
            Value::Array(vec![bulk("a"), bulk("1"), bulk("b"), bulk("")]),
        ]))
        .unwrap();
        assert_eq!(items.text().unwrap(), "ok");
        assert_eq!(items.int().unwrap(), 7);
        assert!(items.flag().unwrap());
        let fields = items.fields().unwrap();
        assert!(fields.flag("a").unwrap());
        assert_eq!(fields.opt_int("b").unwrap(), None);
        assert!(fields.text("c").is_err(), "a missing field is an error");
        assert!(items.text().is_err(), "past the end");
        assert!(Items::new(bulk("x")).is_err());
        assert!(Items::new(Value::Nil).unwrap().is_empty());
        let mut bad = Items::new(Value::Array(vec![bulk("x1")])).unwrap();
        assert!(bad.int().is_err());
        let mut binary = Items::new(Value::Array(vec![Value::BulkString(vec![0xff])])).unwrap();
        assert!(binary.text().is_err(), "not UTF-8");
    }
}
