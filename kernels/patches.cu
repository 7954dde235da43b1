// Fused patch sampling (kgengine.ops.patches), compiled by CuPy after rng.cu.
//
// Grid (chunks, 2, B), block of T threads: block (x, kind, b) handles elements
// [x*T, (x+1)*T) of crop `kind` (0 = G, 1 = D) of image b. Thread 0 draws the crop origin
// (binary search in the cumulative map), the block reads it from shared memory, and each
// thread copies one pixel (D's crop: plus noise, in double, rounded once).
// Strides are in elements; outputs are contiguous (B, C, size, size) and (B, 2).

template <typename T>
__global__ void kg_sample_patches(
    const T* __restrict__ images, long long s_b, long long s_c, long long s_h, long long s_w,
    const double* __restrict__ cdf, long long cs_b, long long cs_t, long long cs_n,
    const long long* __restrict__ sizes, const long long* __restrict__ seeds,
    long long chans, long long width, long long n, long long iteration, double noise_std,
    long long g_size, long long d_size,
    T* __restrict__ g_out, T* __restrict__ d_out, long long* __restrict__ g_tl,
    long long* __restrict__ d_tl) {
    __shared__ long long origin[2];
    const int kind = blockIdx.y;
    const long long b = blockIdx.z;
    const long long size = kind == 0 ? g_size : d_size;
    const long long seed = seeds[b];
    if (threadIdx.x == 0) {
        const double* c = cdf + b * cs_b + kind * cs_t;
        const unsigned int stream = kind == 0 ? 0u : 1u;  // STREAM_G_POS, STREAM_D_POS
        const double target = __dmul_rn(kg_uniform(seed, stream, iteration, 0), c[(n - 1) * cs_n]);
        long long lo = 0, hi = n;  // first index with cdf > target (searchsorted right)
        while (lo < hi) {
            const long long mid = (lo + hi) / 2;
            if (c[mid * cs_n] > target) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        const long long flat = lo < n - 1 ? lo : n - 1;
        const long long row = flat / width;
        const long long col = flat - row * width;
        long long top = row - size / 2;
        top = top > 0 ? top : 0;
        top = top < sizes[2 * b] - size ? top : sizes[2 * b] - size;
        long long left = col - size / 2;
        left = left > 0 ? left : 0;
        left = left < sizes[2 * b + 1] - size ? left : sizes[2 * b + 1] - size;
        origin[0] = top - top % 2;
        origin[1] = left - left % 2;
        if (blockIdx.x == 0) {
            long long* tl = kind == 0 ? g_tl : d_tl;
            tl[2 * b] = origin[0];
            tl[2 * b + 1] = origin[1];
        }
    }
    __syncthreads();
    const long long p = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (p >= chans * size * size) {
        return;
    }
    const long long c = p / (size * size);
    const long long y = (p / size) % size;
    const long long x = p % size;
    const T v = images[b * s_b + c * s_c + (origin[0] + y) * s_h + (origin[1] + x) * s_w];
    const long long o = b * chans * size * size + p;
    if (kind == 0) {
        g_out[o] = v;
    } else {
        const double z = kg_normal(seed, 2u, iteration, p);  // STREAM_D_NOISE
        d_out[o] = (T)__dadd_rn((double)v, __dmul_rn(noise_std, z));
    }
}
