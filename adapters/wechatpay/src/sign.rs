//! WeChat Pay v3 cryptography: SHA256-with-RSA request signatures (merchant private key),
//! verification of responses and notifications (WeChat Pay public key chosen by
//! `Wechatpay-Serial`), and AEAD_AES_256_GCM decryption of notification resources (APIv3
//! key).

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
use aftersales_adapter::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::{RsaPrivateKey, RsaPublicKey};

/// The merchant's signing key. `Debug` shows no key material.
pub(crate) struct MerchantKey(SigningKey<Sha256>);

impl std::fmt::Debug for MerchantKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MerchantKey(***)")
    }
}

impl MerchantKey {
    /// Reads a PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1 (`BEGIN RSA PRIVATE KEY`) PEM.
    pub(crate) fn from_pem(pem: &Secret) -> Result<MerchantKey, String> {
        let text = pem.expose().trim();
        let key = RsaPrivateKey::from_pkcs8_pem(text)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(text))
            .map_err(|_| "not an RSA private key in PKCS#8 or PKCS#1 PEM".to_owned())?;
        Ok(MerchantKey(SigningKey::new(key)))
    }

    /// `base64(SHA256withRSA(message))`.
    pub(crate) fn sign(&self, message: &[u8]) -> String {
        B64.encode(self.0.sign(message).to_bytes())
    }
}

/// The WeChat Pay public keys, by serial (several during a rotation).
#[derive(Clone)]
pub(crate) struct PlatformKeys(Vec<(String, VerifyingKey<Sha256>)>);

impl std::fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(s, _)| s))
            .finish()
    }
}

impl PlatformKeys {
    pub(crate) fn new() -> PlatformKeys {
        PlatformKeys(Vec::new())
    }

    /// Adds the key with this serial from an SPKI (`BEGIN PUBLIC KEY`) PEM.
    pub(crate) fn add(&mut self, serial: &str, pem: &Secret) -> Result<(), String> {
        let key = RsaPublicKey::from_public_key_pem(pem.expose().trim())
            .map_err(|_| format!("the key for serial `{serial}` is not a PUBLIC KEY PEM"))?;
        self.0.push((serial.to_owned(), VerifyingKey::new(key)));
        Ok(())
    }

    /// Whether `signature` (base64) signs `"{timestamp}\n{nonce}\n{body}\n"` under the key
    /// `serial` names. An unknown serial verifies nothing.
    pub(crate) fn verify(
        &self,
        serial: &str,
        timestamp: &str,
        nonce: &str,
        body: &[u8],
        signature: &str,
    ) -> bool {
        let Some((_, key)) = self.0.iter().find(|(s, _)| s == serial) else {
            return false;
        };
        let Ok(raw) = B64.decode(signature.trim()) else {
            return false;
        };
        let Ok(sig) = Signature::try_from(raw.as_slice()) else {
            return false;
        };
        let mut message = Vec::with_capacity(body.len() + timestamp.len() + nonce.len() + 3);
        message.extend_from_slice(timestamp.as_bytes());
        message.push(b'\n');
        message.extend_from_slice(nonce.as_bytes());
        message.push(b'\n');
        message.extend_from_slice(body);
        message.push(b'\n');
        key.verify(&message, &sig).is_ok()
    }
}

/// The APIv3 key, which decrypts notification resources. `Debug` prints `***`.
pub(crate) struct ApiV3Key(Aes256Gcm);

impl std::fmt::Debug for ApiV3Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiV3Key(***)")
    }
}

impl ApiV3Key {
    /// The key is 32 ASCII characters, used as 32 bytes.
    pub(crate) fn new(key: &Secret) -> Result<ApiV3Key, String> {
        Aes256Gcm::new_from_slice(key.expose().as_bytes())
            .map(ApiV3Key)
            .map_err(|_| "the APIv3 key must be 32 bytes".to_owned())
    }

    /// Decrypts `ciphertext` (base64, tag appended) with the 12-byte `nonce` and
    /// `associated_data`.
    pub(crate) fn decrypt(
        &self,
        ciphertext: &str,
        nonce: &str,
        associated_data: &str,
    ) -> Result<Vec<u8>, String> {
        let ct = B64
            .decode(ciphertext.trim())
            .map_err(|_| "the ciphertext is not base64".to_owned())?;
        if nonce.len() != 12 {
            return Err("the nonce is not 12 bytes".to_owned());
        }
        self.0
            .decrypt(
                Nonce::from_slice(nonce.as_bytes()),
                Payload {
                    msg: &ct,
                    aad: associated_data.as_bytes(),
                },
            )
            .map_err(|_| "the resource does not decrypt with the APIv3 key".to_owned())
    }
}
