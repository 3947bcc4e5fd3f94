//! What names, passwords, room names and texts may be: one place, used by the HTTP
//! endpoints, the rpc methods and the CLI alike.

/// Shortest and longest account or guest name, in characters.
pub const NAME_CHARS: (usize, usize) = (2, 32);
/// Shortest and longest password, in characters.
pub const PASSWORD_CHARS: (usize, usize) = (8, 256);
/// Longest room name, in characters.
pub const ROOM_CHARS: usize = 32;
/// Longest room topic, in characters.
pub const TOPIC_CHARS: usize = 200;

/// A display name: 2-32 Unicode letters or digits, or `_`, `-`, `.`. The message says
/// what is wrong, for a person.
pub fn check_name(name: &str) -> Result<(), String> {
    let count = name.chars().count();
    let (min, max) = NAME_CHARS;
    if count < min || count > max {
        return Err(format!("a name has {min} to {max} characters"));
    }
    if let Some(c) = name.chars().find(|&c| !name_char(c)) {
        return Err(format!(
            "a name has letters, digits, '_', '-' and '.' only, not {c:?}"
        ));
    }
    Ok(())
}

fn name_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '-' | '.')
}

/// The user id of an account: its name lowercased. Names are unique by this, so `Alice`
/// and `alice` are one account; it never holds `:`, so it cannot be a guest's id.
pub fn user_id(name: &str) -> String {
    name.to_lowercase()
}

/// Whether a user id is a guest's (`guest:` and 12 random characters).
pub fn is_guest(user: &str) -> bool {
    user.starts_with(GUEST_PREFIX)
}

/// What every guest id starts with.
pub const GUEST_PREFIX: &str = "guest:";

/// A password: 8-256 characters, anything else goes (spaces, any script).
pub fn check_password(password: &str) -> Result<(), String> {
    let count = password.chars().count();
    let (min, max) = PASSWORD_CHARS;
    if count < min {
        return Err(format!("a password has at least {min} characters"));
    }
    if count > max {
        return Err(format!("a password has at most {max} characters"));
    }
    Ok(())
}

/// A room name: 1-32 lowercase ASCII letters, digits or `-` (it becomes the channel
/// `room:NAME`, and a link).
pub fn check_room(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > ROOM_CHARS {
        return Err(format!("a room name has 1 to {ROOM_CHARS} characters"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("a room name has lowercase letters, digits and '-' only".into());
    }
    Ok(())
}

/// A message: 1 to `max` characters, not only white space.
pub fn check_text(text: &str, max: usize) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("the text is empty".into());
    }
    let count = text.chars().count();
    if count > max {
        return Err(format!(
            "the text has {count} characters; at most {max} are allowed"
        ));
    }
    Ok(())
}

/// A topic: at most [`TOPIC_CHARS`] characters (empty clears it).
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.chars().count() > TOPIC_CHARS {
        return Err(format!("a topic has at most {TOPIC_CHARS} characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in [
            "al",
            "Alice",
            "bob_2",
            "a.b-c",
            "张伟",
            "Zoë",
            &"x".repeat(32),
        ] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "al ice",
            "a:b",
            "<b>",
            "a/b",
            "a@b",
            &"x".repeat(33),
            "tab\t",
        ] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(user_id("Zoë"), "zoë");
        assert!(!is_guest(&user_id("guest")), "no colon in a name");
    }

    #[test]
    fn passwords_rooms_texts() {
        assert!(check_password("1234567").is_err());
        assert!(check_password("12345678").is_ok());
        assert!(check_password("密码密码密码密码").is_ok(), "8 characters");
        assert!(check_password(&"p".repeat(257)).is_err());
        assert!(check_room("lobby").is_ok());
        assert!(check_room("rust-2024").is_ok());
        for bad in ["", "Lobby", "a b", "chat:x", "é", &"r".repeat(33)] {
            assert!(check_room(bad).is_err(), "{bad}");
        }
        assert!(check_text("hi", 2000).is_ok());
        assert!(check_text(" \n ", 2000).is_err());
        assert!(
            check_text(&"é".repeat(2000), 2000).is_ok(),
            "characters, not bytes"
        );
        assert!(check_text(&"é".repeat(2001), 2000).is_err());
        assert!(check_topic(&"t".repeat(200)).is_ok());
        assert!(check_topic(&"t".repeat(201)).is_err());
    }
}
