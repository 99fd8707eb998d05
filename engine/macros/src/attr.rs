//! The attributes' own arguments: `("short_term")` and `(namespace =
//! "users", expire = 60)`, checked here so that a typo is a compile error
//! instead of a function that silently runs uncached.

use proc_macro2::{Span, TokenStream};
use syn::parse::{ParseStream, Parser};
use syn::{Expr, ExprLit, ExprUnary, Lit, LitStr, UnOp};

/// Where the decorated function's values live.
pub(crate) enum Place {
    /// `#[cache_region("name")]`.
    Region(LitStr),
    /// `#[cached(namespace = "...", expire = N)]`, both optional.
    Namespace {
        namespace: Option<LitStr>,
        expire_secs: Option<u64>,
    },
}

/// The prefix of the namespaces carboy keeps its region markers in
/// (`carboy::cache` refuses to open them).
const RESERVED_NAMESPACE: &str = "carboy:";

/// Parses `#[cache_region(...)]`'s arguments: one string literal.
pub(crate) fn region(attr: TokenStream) -> syn::Result<Place> {
    let parser = |input: ParseStream| {
        let usage = "#[cache_region] takes the region's name as a string literal: \
                     #[cache_region(\"short_term\")]";
        if input.is_empty() {
            return Err(syn::Error::new(Span::call_site(), usage));
        }
        let name = match input.parse::<Lit>() {
            Ok(Lit::Str(s)) => s,
            Ok(other) => return Err(syn::Error::new_spanned(other, usage)),
            Err(e) => return Err(syn::Error::new(e.span(), usage)),
        };
        let _ = input.parse::<Option<syn::Token![,]>>()?;
        if !input.is_empty() {
            return Err(input.error("#[cache_region] takes one argument, the region's name"));
        }
        let value = name.value();
        if value.is_empty() || value.contains('.') {
            return Err(syn::Error::new_spanned(
                &name,
                "region names are non-empty and contain no '.' (a `CacheManager` refuses them)",
            ));
        }
        Ok(Place::Region(name))
    };
    parser.parse2(attr)
}

/// Parses `#[cached(...)]`'s arguments: `namespace = "..."` and `expire =
/// <seconds>`, each at most once, both optional.
pub(crate) fn namespace(attr: TokenStream) -> syn::Result<Place> {
    let mut namespace: Option<LitStr> = None;
    let mut expire_secs: Option<u64> = None;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("namespace") {
            if namespace.is_some() {
                return Err(meta.error("`namespace` is given twice"));
            }
            let value: Expr = meta.value()?.parse()?;
            namespace = Some(namespace_name(value)?);
            Ok(())
        } else if meta.path.is_ident("expire") {
            if expire_secs.is_some() {
                return Err(meta.error("`expire` is given twice"));
            }
            let value: Expr = meta.value()?.parse()?;
            expire_secs = Some(seconds(value)?);
            Ok(())
        } else {
            let name = quote::ToTokens::to_token_stream(&meta.path).to_string();
            Err(meta.error(format!(
                "unknown argument `{name}`: #[cached] takes `namespace = \"...\"` and \
                 `expire = <seconds>`, both optional"
            )))
        }
    });
    let first = attr.clone().into_iter().next();
    parser.parse2(attr).map_err(|e| match first {
        // `#[cached("users")]`: say what the arguments look like.
        Some(proc_macro2::TokenTree::Literal(lit)) => syn::Error::new(
            lit.span(),
            "#[cached] takes named arguments: #[cached(namespace = \"users\", expire = 60)]",
        ),
        _ => e,
    })?;
    Ok(Place::Namespace {
        namespace,
        expire_secs,
    })
}

/// The value of `namespace = ...`: a non-empty string literal that does
/// not start with carboy's reserved prefix.
fn namespace_name(value: Expr) -> syn::Result<LitStr> {
    let Expr::Lit(ExprLit {
        lit: Lit::Str(name),
        ..
    }) = value
    else {
        return Err(syn::Error::new_spanned(
            value,
            "`namespace` must be a string literal: namespace = \"users\"",
        ));
    };
    let text = name.value();
    if text.is_empty() {
        return Err(syn::Error::new_spanned(
            &name,
            "the namespace is empty; leave `namespace` out to use the function's path",
        ));
    }
    if text.starts_with(RESERVED_NAMESPACE) {
        return Err(syn::Error::new_spanned(
            &name,
            "namespaces starting with \"carboy:\" are carboy's own (region markers)",
        ));
    }
    Ok(name)
}

/// The value of `expire = ...`: a positive whole number of seconds, as an
/// integer literal.
fn seconds(value: Expr) -> syn::Result<u64> {
    let lit = match value {
        Expr::Lit(ExprLit {
            lit: Lit::Int(lit), ..
        }) => lit,
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => {
            return Err(syn::Error::new_spanned(
                value,
                "`expire` cannot be negative: it is how many seconds values stay fresh",
            ));
        }
        Expr::Lit(ExprLit {
            lit: Lit::Float(_), ..
        }) => {
            return Err(syn::Error::new_spanned(
                value,
                "`expire` is a whole number of seconds: expire = 60",
            ));
        }
        Expr::Lit(ExprLit {
            lit: Lit::Str(_), ..
        }) => {
            return Err(syn::Error::new_spanned(
                value,
                "`expire` is a number of seconds, not a string: expire = 60",
            ));
        }
        _ => {
            return Err(syn::Error::new_spanned(
                value,
                "`expire` must be an integer literal, in seconds: expire = 60",
            ));
        }
    };
    if !matches!(lit.suffix(), "" | "u8" | "u16" | "u32" | "u64" | "usize") {
        return Err(syn::Error::new_spanned(
            &lit,
            "`expire` is a number of seconds without a unit: expire = 60",
        ));
    }
    let secs: u64 = lit.base10_parse().map_err(|_| {
        syn::Error::new_spanned(&lit, "`expire` does not fit in a u64 number of seconds")
    })?;
    if secs == 0 {
        return Err(syn::Error::new_spanned(
            &lit,
            "`expire = 0` would make every value stale as soon as it is stored; leave \
             `expire` out to use the manager's expiry",
        ));
    }
    Ok(secs)
}
