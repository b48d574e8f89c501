//! The public API of `precall-protocol` (default features: the crate an embedder
//! ships), as an insta snapshot: every public module, type, field, variant, function
//! signature, constant, re-export and trait implementation, read from the source with
//! `syn` and printed without bodies or docs. A change to the API shows up as a snapshot
//! diff to review (`cargo insta review`); CI fails on any difference it was not shown.
//!
//! Items behind a feature (`testing`, `arbitrary`, `model`) and test modules are named
//! but not listed: they are not what an embedder ships.

use std::fs;
use std::path::{Path, PathBuf};

use syn::visit_mut::VisitMut;
use syn::{Attribute, Fields, ImplItem, Item, Visibility};

/// The attributes that are part of an item's API.
fn keep_attr(a: &Attribute) -> bool {
    [
        "derive",
        "non_exhaustive",
        "must_use",
        "deprecated",
        "repr",
        "private_fields",
    ]
    .iter()
    .any(|n| a.path().is_ident(n))
}

fn is_pub(v: &Visibility) -> bool {
    matches!(v, Visibility::Public(_))
}

/// `#[cfg(...)]` attributes of an item: test-only and feature-gated items are skipped.
fn cfg_of(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find(|a| a.path().is_ident("cfg")).map(|a| {
        let mut s = String::new();
        if let syn::Meta::List(l) = &a.meta {
            s = l.tokens.to_string();
        }
        s
    })
}

/// Function bodies become `{}`; docs and other non-API attributes go.
struct Strip;

impl VisitMut for Strip {
    fn visit_block_mut(&mut self, b: &mut syn::Block) {
        b.stmts.clear();
    }
    fn visit_attributes_mut(&mut self, attrs: &mut Vec<Attribute>) {
        attrs.retain(keep_attr);
    }
}

/// Keeps what another crate can name: public fields (a struct with private ones is
/// marked, since that stops construction from outside), public methods, trait
/// implementations without their items.
fn public_part(item: &Item) -> Option<Item> {
    let mut item = item.clone();
    match &mut item {
        Item::Struct(s) if is_pub(&s.vis) => {
            if let Fields::Named(f) = &mut s.fields {
                let before = f.named.len();
                f.named = f.named.iter().filter(|x| is_pub(&x.vis)).cloned().collect();
                if f.named.len() != before {
                    s.attrs.push(syn::parse_quote!(#[private_fields]));
                }
            }
        }
        Item::Enum(e) if is_pub(&e.vis) => {}
        Item::Fn(f) if is_pub(&f.vis) => {}
        Item::Const(c) if is_pub(&c.vis) => {}
        Item::Static(s) if is_pub(&s.vis) => {}
        Item::Type(t) if is_pub(&t.vis) => {}
        Item::Trait(t) if is_pub(&t.vis) => {}
        Item::Use(u) if is_pub(&u.vis) => {}
        // The identifier types are declared through a macro: its invocations name them.
        Item::Macro(m) if m.ident.is_none() => {}
        Item::Impl(i) => {
            if i.trait_.is_some() {
                i.items.clear();
            } else {
                i.items.retain(|x| {
                    matches!(x, ImplItem::Fn(f) if is_pub(&f.vis))
                        || matches!(x, ImplItem::Const(c) if is_pub(&c.vis))
                });
                if i.items.is_empty() {
                    return None;
                }
            }
        }
        _ => return None,
    }
    Strip.visit_item_mut(&mut item);
    Some(item)
}

/// The file of module `name` declared in `file`.
fn module_file(file: &Path, name: &str) -> PathBuf {
    let here = file.parent().unwrap_or(Path::new("."));
    let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let dir = if matches!(stem, "lib" | "mod") {
        here.to_path_buf()
    } else {
        here.join(stem)
    };
    let flat = dir.join(format!("{name}.rs"));
    if flat.is_file() {
        flat
    } else {
        dir.join(name).join("mod.rs")
    }
}

/// Lists module `path` (in `file`) and its submodules into `out`.
fn walk(file: &Path, path: &str, out: &mut String) {
    let src = fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let ast = syn::parse_file(&src).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut items = Vec::new();
    let mut children = Vec::new();
    for item in &ast.items {
        let attrs: &[Attribute] = match item {
            Item::Mod(m) => &m.attrs,
            Item::Impl(i) => &i.attrs,
            Item::Fn(f) => &f.attrs,
            Item::Struct(s) => &s.attrs,
            Item::Enum(e) => &e.attrs,
            Item::Use(u) => &u.attrs,
            _ => &[],
        };
        if let Some(cfg) = cfg_of(attrs) {
            if let Item::Mod(m) = item {
                if is_pub(&m.vis) {
                    out.push_str(&format!(
                        "// {path}::{}: behind cfg({cfg}), not listed\n",
                        m.ident
                    ));
                }
            }
            continue;
        }
        match item {
            Item::Mod(m) if m.content.is_none() => children.push(m.ident.to_string()),
            other => items.extend(public_part(other)),
        }
    }
    out.push_str(&format!("\n// ===== {path}\n"));
    if !items.is_empty() {
        let file = syn::File {
            shebang: None,
            attrs: vec![],
            items,
        };
        out.push_str(&prettyplease::unparse(&file));
    }
    for child in children {
        walk(&module_file(file, &child), &format!("{path}::{child}"), out);
    }
}

fn api() -> String {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs");
    let mut out = String::new();
    walk(&lib, "precall_protocol", &mut out);
    out
}

#[test]
fn the_public_api_is_the_reviewed_one() {
    insta::assert_snapshot!(api());
}

/// The listing is not blind: a renamed method, a new field or a dropped
/// `#[non_exhaustive]` each change it.
#[test]
fn the_listing_sees_signatures_fields_and_attributes() {
    let api = api();
    assert!(
        api.contains("pub fn poll_transmit(&mut self) -> Option<Bytes> {}"),
        "{api}"
    );
    assert!(api.contains("#[must_use]\n    pub fn poll_event(&mut self) -> Option<ClientEvent> {}"));
    assert!(api.contains("#[non_exhaustive]\npub enum ClientEvent {"));
    assert!(api.contains("#[private_fields]\npub struct Capabilities {}"));
    assert!(api.contains("pub use client::{"));
    // Private items and bodies are not listed.
    assert!(!api.contains("fn online_mut"));
    assert!(!api.contains("self.out.pop_front()"));
}
