//! The rewrite of a decorated function (see the [crate docs](crate)): checks
//! that the function is one the expansion is correct for, then emits the
//! `Site` static, the caching function and its `_invalidate` twin.

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, GenericParam, Item, ItemFn, Pat, ReturnType, Safety, Type};

use crate::attr::{self, Place};

/// `#[cache_region(...)]`: the expansion, or the compile errors.
pub(crate) fn cache_region(attr: TokenStream, item: TokenStream) -> TokenStream {
    try_cache_region(attr, item).unwrap_or_else(syn::Error::into_compile_error)
}

/// `#[cached(...)]`: the expansion, or the compile errors.
pub(crate) fn cached(attr: TokenStream, item: TokenStream) -> TokenStream {
    try_cached(attr, item).unwrap_or_else(syn::Error::into_compile_error)
}

pub(crate) fn try_cache_region(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    expand("cache_region", attr::region(attr), item)
}

pub(crate) fn try_cached(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    expand("cached", attr::namespace(attr), item)
}

/// One argument of the decorated function.
struct Arg {
    /// The name the outer function binds it to.
    name: Ident,
    ty: Type,
}

/// Collects every problem, so that one build reports them all.
#[derive(Default)]
struct Problems(Option<syn::Error>);

impl Problems {
    fn add(&mut self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        let error = syn::Error::new_spanned(tokens, message);
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn add_error(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    fn check(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

fn expand(which: &str, place: syn::Result<Place>, item: TokenStream) -> syn::Result<TokenStream> {
    let mut problems = Problems::default();
    let place = place.map_err(|e| problems.add_error(e)).ok();
    let function = match syn::parse2::<Item>(item) {
        Ok(Item::Fn(f)) => Some(f),
        Ok(other) => {
            problems.add(
                other,
                format!("#[{which}] applies to free functions (`fn name(args) -> T {{ … }}`)"),
            );
            None
        }
        Err(e) => {
            problems.add_error(e);
            None
        }
    };
    let args = function
        .as_ref()
        .map(|f| check_function(which, f, &mut problems));
    problems.check()?;
    match (place, function, args) {
        (Some(place), Some(function), Some(args)) => Ok(generate(&place, function, &args)),
        // Each missing piece added a problem, so `check` returned.
        _ => Err(syn::Error::new(
            Span::call_site(),
            "carboy-macros bug: a part of the function is missing, with no error for it",
        )),
    }
}

/// Checks that the expansion is correct for `f`, and returns its
/// arguments. Every problem found is added to `problems`.
fn check_function(which: &str, f: &ItemFn, problems: &mut Problems) -> Vec<Arg> {
    let sig = &f.sig;
    let plain = "the memo runtime calls a plain function or `async fn`";
    if let Some(t) = &sig.constness {
        problems.add(t, format!("#[{which}] cannot make a `const fn`: {plain}"));
    }
    if let Safety::Unsafe(t) = &sig.safety {
        problems.add(
            t,
            format!("#[{which}] does not support `unsafe fn`: {plain}"),
        );
    }
    if let Some(abi) = &sig.abi {
        problems.add(
            abi,
            format!("#[{which}] does not support `extern` functions: {plain}"),
        );
    }
    if let Some(v) = &sig.variadic {
        problems.add(v, format!("#[{which}] does not support variadic functions"));
    }
    if contains_ident(sig.to_token_stream(), "Self") {
        problems.add(
            sig,
            format!(
                "#[{which}] applies to free functions; a signature with `Self` is in an `impl` \
                 block, where the expansion's `static` cannot go. Move the cached work into a \
                 free function"
            ),
        );
    }
    for param in &sig.generics.params {
        match param {
            GenericParam::Lifetime(_) => {}
            GenericParam::Type(_) | GenericParam::Const(_) => problems.add(
                param,
                format!(
                    "#[{which}] does not support generic type or const parameters: the \
                     function's values share one namespace keyed by its arguments, which would \
                     mix the instances; write one non-generic function per type"
                ),
            ),
        }
    }
    if let ReturnType::Type(_, ty) = &sig.output
        && contains_ident(ty.to_token_stream(), "impl")
    {
        problems.add(
            ty,
            format!(
                "#[{which}] needs a named return type, not `impl Trait`: cached values are \
                 deserialized into it"
            ),
        );
    }
    let mut args = Vec::new();
    for input in &sig.inputs {
        let typed = match input {
            FnArg::Receiver(r) => {
                problems.add(
                    r,
                    format!(
                        "#[{which}] does not support methods: `self` would not be part of the \
                         cache key, and the expansion's `static` cannot go in an `impl` block. \
                         Move the cached work into a free function taking what it needs"
                    ),
                );
                continue;
            }
            FnArg::Typed(t) => t,
        };
        let ty = &*typed.ty;
        if contains_ident(ty.to_token_stream(), "impl") {
            problems.add(
                ty,
                format!(
                    "#[{which}] does not support `impl Trait` arguments: they are generic \
                     parameters (see generics); name the type"
                ),
            );
        }
        if has_mut_reference(ty.to_token_stream()) {
            problems.add(
                ty,
                format!(
                    "#[{which}] does not support `&mut` arguments: a cache hit skips the body, \
                     so its changes to the argument would not happen"
                ),
            );
        }
        match &*typed.pat {
            Pat::Ident(p) if p.subpat.is_none() => args.push(Arg {
                name: p.ident.clone(),
                ty: ty.clone(),
            }),
            other => problems.add(
                other,
                format!(
                    "#[{which}] needs each argument to be a plain name (`name: Type`, or `mut \
                     name: Type`) to build the key from; destructure it in the body"
                ),
            ),
        }
    }
    args
}

/// True when `tokens` hold the identifier `name` (in any group).
fn contains_ident(tokens: TokenStream, name: &str) -> bool {
    tokens.into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == name,
        TokenTree::Group(g) => contains_ident(g.stream(), name),
        _ => false,
    })
}

/// True when a type's tokens hold `mut` other than in `*mut` (a raw
/// pointer): in a type, that is a `&mut` or `&'a mut` reference.
fn has_mut_reference(tokens: TokenStream) -> bool {
    let mut after_star = false;
    for t in tokens {
        let found = match &t {
            TokenTree::Ident(i) => i == "mut" && !after_star,
            TokenTree::Group(g) => has_mut_reference(g.stream()),
            _ => false,
        };
        if found {
            return true;
        }
        after_star = matches!(&t, TokenTree::Punct(p) if p.as_char() == '*');
    }
    false
}

/// True when the return type's last path segment is `Result`.
fn returns_result(output: &ReturnType) -> bool {
    let ReturnType::Type(_, ty) = output else {
        return false;
    };
    let mut ty = &**ty;
    loop {
        match ty {
            Type::Paren(p) => ty = &p.elem,
            Type::Group(g) => ty = &g.elem,
            Type::Path(p) => {
                return p.path.segments.last().is_some_and(|s| s.ident == "Result");
            }
            _ => return false,
        }
    }
}

/// The attributes that also apply to the static and to `_invalidate`:
/// `#[cfg]` (the items exist together) and lint levels (`expect` becomes
/// `allow`: the lint it expects need not fire there).
fn shared_attributes(attrs: &[Attribute]) -> Vec<TokenStream> {
    let mut out = Vec::new();
    for a in attrs {
        let path = a.path();
        if path.is_ident("cfg")
            || path.is_ident("allow")
            || path.is_ident("warn")
            || path.is_ident("deny")
            || path.is_ident("forbid")
        {
            out.push(a.to_token_stream());
        } else if path.is_ident("expect")
            && let syn::Meta::List(list) = &a.meta
        {
            let tokens = &list.tokens;
            out.push(quote!(#[allow(#tokens)]));
        }
    }
    out
}

fn generate(place: &Place, f: ItemFn, args: &[Arg]) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = f;
    let ident = &sig.ident;
    let name = ident.unraw().to_string();
    let span = ident.span();
    let site = format_ident!("__CARBOY_SITE_{}", name, span = span);
    let invalidate = format_ident!("{}_invalidate", name, span = span);
    let generics = &sig.generics;
    let where_clause = &generics.where_clause;
    let output = &sig.output;
    let inputs = &sig.inputs;
    let names: Vec<&Ident> = args.iter().map(|a| &a.name).collect();
    let types: Vec<&Type> = args.iter().map(|a| &a.ty).collect();
    let memo = quote!(::carboy::cache::memo);
    let path = quote!(::core::concat!(::core::module_path!(), "::", #name));

    let (site_init, args_key) = match place {
        Place::Region(region) => (
            quote!(#memo::Site::region(#region, #path)),
            quote!((#(&#names,)*)),
        ),
        Place::Namespace {
            namespace,
            expire_secs,
        } => {
            let expire = match expire_secs {
                Some(s) => quote!(::core::option::Option::Some(#s)),
                None => quote!(::core::option::Option::None),
            };
            match namespace {
                // A namespace of its own: the arguments are the key.
                None => (
                    quote!(#memo::Site::namespace("", #expire, #path)),
                    quote!((#(&#names,)*)),
                ),
                // A namespace other functions may share: the function's
                // path comes first in the key.
                Some(ns) => (
                    quote!(#memo::Site::namespace(#ns, #expire, #path)),
                    quote!((#path, (#(&#names,)*))),
                ),
            }
        }
    };
    let call = if returns_result(output) {
        quote!(call_result)
    } else {
        quote!(call)
    };
    // Trait errors about the value type point at the return type.
    let output_span = match output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => Span::call_site(),
    };
    let run = if names.is_empty() {
        quote!(__carboy_inner)
    } else {
        quote!(move || __carboy_inner(#(#names),*))
    };
    // An `async fn` goes through the module that exists only with carboy's
    // feature `async`: without it, its name is the compile error.
    let is_async = sig.asyncness.is_some();
    let (runtime, asyncness, awaited) = if is_async {
        (
            quote!(#memo::async_requires_the_carboy_feature_async),
            quote!(async),
            quote!(.await),
        )
    } else {
        (memo.clone(), quote!(), quote!())
    };
    let call = quote_spanned!(output_span=> #runtime::#call(&#site, __carboy_key, #run) #awaited);
    // The same for each argument that is not `Serialize`: a check that
    // costs nothing at run time (a function item, never called).
    let checks = types
        .iter()
        .map(|ty| quote_spanned!(ty.span()=> let _ = ::carboy::cache::memo::key::<#ty>;));
    let shared = shared_attributes(&attrs);
    let unresolved = match place {
        Place::Region(_) => {
            format!("no cache manager is installed, `{name}`'s region is not configured")
        }
        Place::Namespace { .. } => String::from("no cache manager is installed"),
    };
    let doc = format!(
        " Removes the cached value of `{name}` for these arguments, in every process sharing \
         the cache.\n\n Fails when {unresolved}, or the cache fails."
    );

    quote! {
        #(#shared)*
        #[doc(hidden)]
        #[allow(non_upper_case_globals)]
        static #site: #memo::Site = #site_init;

        #(#attrs)*
        #vis #asyncness fn #ident #generics (#(#names: #types),*) #output #where_clause {
            #asyncness fn __carboy_inner #generics (#inputs) #output #where_clause #block
            #(#checks)*
            let __carboy_key = #memo::key(&#args_key);
            #call
        }

        #(#shared)*
        #[doc = #doc]
        #vis #asyncness fn #invalidate #generics (#(#names: #types),*) -> ::carboy::Result<()> #where_clause {
            #runtime::invalidate(&#site, #memo::key(&#args_key)) #awaited
        }
    }
}
