// kgengine counter-based RNG (device functions), the CUDA twin of kgengine/ops/rng.py.
// Not compiled alone: kgengine.ops._cupy prepends it to the kernels that draw numbers.
//
//   fmix32(h): h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16
//   key  = fmix32(fmix32(fmix32(fmix32(0x243F6A88 ^ seed_lo) ^ seed_hi) ^ stream) ^ counter)
//   hash = fmix32(fmix32(key ^ index) + key)            (all mod 2^32)
//   uniform = hash * 2^-32;  normal = sqrt(-2 log1p(-u(2i))) * cos(2 pi u(2i+1))

__device__ __forceinline__ unsigned int kg_fmix32(unsigned int h) {
    h ^= h >> 16;
    h *= 0x85EBCA6Bu;
    h ^= h >> 13;
    h *= 0xC2B2AE35u;
    h ^= h >> 16;
    return h;
}

__device__ __forceinline__ unsigned int kg_hash32(long long seed, unsigned int stream,
                                                  long long counter, long long index) {
    unsigned int key = kg_fmix32(0x243F6A88u ^ (unsigned int)(seed & 0xFFFFFFFFLL));
    key = kg_fmix32(key ^ (unsigned int)(((unsigned long long)seed) >> 32));
    key = kg_fmix32(key ^ stream);
    key = kg_fmix32(key ^ (unsigned int)(counter & 0xFFFFFFFFLL));
    const unsigned int h = kg_fmix32(key ^ (unsigned int)(index & 0xFFFFFFFFLL));
    return kg_fmix32(h + key);
}

__device__ __forceinline__ double kg_uniform(long long seed, unsigned int stream,
                                             long long counter, long long index) {
    return (double)kg_hash32(seed, stream, counter, index) * 2.3283064365386963e-10;
}

__device__ __forceinline__ double kg_normal(long long seed, unsigned int stream,
                                            long long counter, long long index) {
    const double u1 = kg_uniform(seed, stream, counter, 2 * index);
    const double u2 = kg_uniform(seed, stream, counter, 2 * index + 1);
    return __dmul_rn(sqrt(__dmul_rn(-2.0, log1p(-u1))), cos(__dmul_rn(6.283185307179586, u2)));
}
