//! The trust model's broker side (docs/adr/0012-agent.md): node agent `NAME` connects as its
//! own RabbitMQ user `<node_user_prefix>NAME`, which may only
//! - publish to the agent exchange with routing keys `node.<kind>.NAME` (topic permission),
//! - consume and bind its own queue `aos-agent.node.NAME`, bound only to `request.NAME`,
//! - neither configure nor delete the exchange or anything else.
//!
//! Together with RabbitMQ's validated `user_id` (the broker refuses a message whose `user_id`
//! property is not the publishing connection's user) and the receivers' check that this user
//! matches the node named in the envelope, one node cannot speak for another nor read another
//! node's requests. These are the `rabbitmqctl` commands an operator (or the packaging) runs
//! once per node; `aos-cloud-manager agent rabbitmq-commands NODE` prints them.

use crate::protocol::{EXCHANGE, node_queue};

/// Escapes `text` for a RabbitMQ permission regular expression (host names contain dots).
pub fn regex_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() * 2);
    for character in text.chars() {
        if "\\.+*?()|[]{}^$".contains(character) {
            escaped.push('\\');
        }
        escaped.push(character);
    }
    escaped
}

/// The permissions of a node user, as `rabbitmqctl` argument lists (without the program name
/// and without `add_user`, whose password the operator chooses).
pub fn node_user_permissions(vhost: &str, user: &str, node: &str) -> Vec<Vec<String>> {
    let exchange = regex_escape(EXCHANGE);
    let queue = regex_escape(&node_queue(node));
    let node = regex_escape(node);
    vec![
        vec![
            "set_permissions".into(),
            "-p".into(),
            vhost.into(),
            user.into(),
            // configure: only its own queue (declaring it).
            format!("^{queue}$"),
            // write: publish to the exchange; bind its own queue (binding needs write on it).
            format!("^({exchange}|{queue})$"),
            // read: consume its own queue; bind from the exchange (needs read on it).
            format!("^({exchange}|{queue})$"),
        ],
        vec![
            "set_topic_permissions".into(),
            "-p".into(),
            vhost.into(),
            user.into(),
            EXCHANGE.into(),
            // write: the routing keys it may publish with.
            format!("^node\\.(heartbeat|confirm|response)\\.{node}$"),
            // read: the binding keys it may bind with.
            format!("^request\\.{node}$"),
        ],
    ]
}

/// The complete shell commands for node `node` (with `'…'` quoting), for operators.
pub fn node_user_commands(vhost: &str, user: &str, node: &str) -> Vec<String> {
    let quote = |argument: &str| {
        if !argument.is_empty()
            && argument.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ':'))
        {
            argument.to_owned()
        } else {
            format!("'{}'", argument.replace('\'', "'\\''"))
        }
    };
    let mut lines = vec![format!("rabbitmqctl add_user {} \"$NODE_AGENT_PASSWORD\"", quote(user))];
    for arguments in node_user_permissions(vhost, user, node) {
        let arguments: Vec<String> = arguments.iter().map(|argument| quote(argument)).collect();
        lines.push(format!("rabbitmqctl {}", arguments.join(" ")));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_escaped_in_the_permission_patterns() {
        let permissions = node_user_permissions("/", "aos-agent-cmp-1.dc", "cmp-1.dc");
        assert_eq!(permissions[0][4], "^aos-agent\\.node\\.cmp-1\\.dc$");
        assert_eq!(permissions[1][5], "^node\\.(heartbeat|confirm|response)\\.cmp-1\\.dc$");
        assert_eq!(permissions[1][6], "^request\\.cmp-1\\.dc$");
    }
}
