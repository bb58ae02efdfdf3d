// ImageNet-style folder: DIR/<class>/.../<image>.{jpg,jpeg,png} (any case), labelled like
// torchvision.datasets.ImageFolder: class folders sorted by name get labels 0, 1, ...; the images
// of a class are found recursively (following links) and ordered by folder, then file name.
// The listing is made at open; images are read and decoded in get() with the evaluation transform
//   Resize(resize) -> CenterCrop(size) -> ToTensor
// (the geometry is in image_resize.h); open_dataset() then normalizes, by default with ImageNet's
// mean and std (dataset.h).
#include <algorithm>
#include <array>
#include <filesystem>
#include <system_error>

#include "anybit/data/file_read.h"
#include "anybit/data/image_decode.h"
#include "anybit/data/image_resize.h"
#include "anybit/data/readers.h"

namespace anybit {
namespace data {
namespace {

namespace fs = std::filesystem;

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png";
}

struct Sample {
  std::string path;
  int64_t label;
};

class ImageFolderDataset : public Dataset {
 public:
  ImageFolderDataset(std::vector<Sample> samples, int64_t resize, int64_t size)
      : samples_(std::move(samples)), resize_(resize), size_(size) {
    for (int v = 0; v < 256; ++v) scaled_[v] = static_cast<float>(v) / 255.0f;
  }
  int64_t size() const override { return static_cast<int64_t>(samples_.size()); }
  std::vector<int64_t> sample_shape() const override { return {3, size_, size_}; }
  void get(int64_t index, float* out, int64_t* label) const override {
    check_index("imagefolder", index, size());
    const Sample& s = samples_[index];
    const std::string name = "imagefolder: " + s.path;
    const RgbImage image = decode_image(read_file_bytes("imagefolder", s.path), name);
    const int64_t plane = size_ * size_;
    std::vector<uint8_t> crop(static_cast<size_t>(3 * plane));
    resize_center_crop_bilinear_antialias(image, resize_, size_, crop.data());
    for (int64_t k = 0; k < 3 * plane; ++k) out[k] = scaled_[crop[k]];
    *label = s.label;
  }

 private:
  std::vector<Sample> samples_;
  int64_t resize_, size_;
  std::array<float, 256> scaled_;  // v / 255
};

}  // namespace

std::unique_ptr<Dataset> open_image_folder_dataset(const std::string& dir, int64_t resize, int64_t size) {
  if (!path_exists(dir)) throw Error("imagefolder: " + dir + ": no such directory");
  if (!is_directory(dir)) throw Error("imagefolder: " + dir + ": not a directory");
  std::error_code ec;
  std::vector<std::string> classes;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->is_directory(ec)) classes.push_back(it->path().filename().string());
  if (ec) throw Error("imagefolder: " + dir + ": cannot list: " + ec.message());
  if (classes.empty()) throw Error("imagefolder: " + dir + ": no class folders (expected DIR/<class>/<image>)");
  std::sort(classes.begin(), classes.end());

  std::vector<Sample> samples;
  for (size_t label = 0; label < classes.size(); ++label) {
    const fs::path class_dir = fs::path(dir) / classes[label];
    std::vector<std::pair<std::string, std::string>> found;  // (folder, file name), sorted like os.walk
    const auto options = fs::directory_options::follow_directory_symlink;
    for (fs::recursive_directory_iterator it(class_dir, options, ec), end; !ec && it != end; it.increment(ec))
      if (it->is_regular_file(ec) && has_image_extension(it->path()))
        found.emplace_back(it->path().parent_path().string(), it->path().filename().string());
    if (ec) throw Error("imagefolder: " + class_dir.string() + ": cannot list: " + ec.message());
    if (found.empty())
      throw Error("imagefolder: " + class_dir.string() + ": class folder holds no .jpg, .jpeg or .png image");
    std::sort(found.begin(), found.end());
    for (const auto& f : found) samples.push_back({f.first + "/" + f.second, static_cast<int64_t>(label)});
  }
  return std::make_unique<ImageFolderDataset>(std::move(samples), resize, size);
}

}  // namespace data
}  // namespace anybit
